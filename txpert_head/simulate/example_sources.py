"""Example source files in the real layouts kgbuild parses, each a noisy, partial view of the ground truth.

Every writer takes the :class:`~txpert_head.simulate.network.GroundTruthNetwork`, a seed and a path, draws
which genes the source covers (independently per source, so the sources cover different genes), writes
the file(s) atomically and byte-reproducibly, and returns a small dict of what it wrote.

=============  ==========================================  ============================================
source         layout (as the real download)                signal and noise
=============  ==========================================  ============================================
STRING         ``protein.links`` (space-separated,          true pairs kept with prob ``recall``; score
               ``protein1 protein2 combined_score``,        ``300 + 600 min(1, s/1.2) + N(0, 80)`` with
               ``9606.ENSP...`` ids, both orientations,     ``s = |W_ij| + |W_ji|``; false pairs (25 % of
               sorted, gzip) + ``protein.info``             the true ones) scored ``N(400, 150)``; all
               (``#string_protein_id preferred_name         clipped to 150..999
               protein_size annotation``, tab, gzip)
GO             ``go-basic.obo`` (OBO 1.2, plain text:       BP: one term per module, two branch terms per
               goatools cannot read gzip) + GAF 2.2         module (is_a), link terms (part_of); genes
               (17 tab-separated columns, gzip)             annotated to their branch (80 %) or module;
                                                            10 % wrong annotations; NOT-qualified rows
                                                            to wrong terms; weakly informative MF / CC
Reactome       ``ReactomePathways.gmt``                     1-2 pathways per module (50-90 % of members
               (``name<TAB>R-HSA-id<TAB>genes...``,         + 0-2 random genes), pathways spanning linked
               ``-`` for spaces in names)                   modules, small random pathways
screen         parquet, column ``gene`` + ``z_1..z_d``      ``Â² F + N(0, noise²)`` with ``F ~ N(0, 1)``
               (float32), like the DepMap embeddings        and ``Â`` the normalised symmetric adjacency
=============  ==========================================  ============================================

The noise levels in the right-hand column are those of :class:`SourceNoise` (the writers' defaults).
``txpert simulate --graph-noise F`` scales all of them with one number (:meth:`SourceNoise.scaled`):
probabilities of keeping true information (coverage, STRING recall, share of a module in its Reactome
pathway, share of correct MF annotations) are raised to the power ``F``, amounts of false information
(STRING false pairs and score noise, wrong and NOT GO annotations, random Reactome genes and pathways,
embedding noise) are multiplied by ``F``. ``F = 1`` gives exactly the defaults, ``F = 0`` complete, clean
views of the truth (the cellular-component annotations, random by design, stay as they are), ``F = 2``
much noisier ones (e.g. STRING: 72 % coverage, 56 % recall, 50 % false pairs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from kgbuild.atomic import atomic_path
from txpert_head.simulate.files import write_text
from txpert_head.simulate.network import GroundTruthNetwork

STRING_LINKS = "string/9606.protein.links.sim.txt.gz"
STRING_INFO = "string/9606.protein.info.sim.txt.gz"
GO_OBO = "go/go-basic.obo"
GO_GAF = "go/goa_human.sim.gaf.gz"
REACTOME_GMT = "reactome/ReactomePathways.sim.gmt"
SCREEN_PARQUET = "screen/screen_gene_embeddings.sim.parquet"

GO_ROOTS = {
    "biological_process": ("GO:0008150", "P"),
    "molecular_function": ("GO:0003674", "F"),
    "cellular_component": ("GO:0005575", "C"),
}
QUALIFIER = {"P": "involved_in", "F": "enables", "C": "located_in"}
EVIDENCE = ("IDA", "IMP", "IPI", "IGI", "TAS", "ISS", "IEA", "HDA")


@dataclass(frozen=True)
class SourceNoise:
    """Noise levels of every example source: fields ``<source>_<writer keyword>``, defaults = today's files.

    ``kwargs("string")`` gives the keyword arguments of :func:`write_string`, and so on.
    """

    string_coverage: float = 0.85
    string_recall: float = 0.75
    string_false_fraction: float = 0.25
    string_score_sd: float = 80.0
    go_coverage: float = 0.75
    go_wrong_fraction: float = 0.1
    go_not_fraction: float = 0.05
    go_function_precision: float = 0.6
    reactome_coverage: float = 0.6
    reactome_member_min: float = 0.5
    reactome_member_max: float = 0.9
    reactome_cascade_fraction: float = 0.6
    reactome_max_extra: int = 2
    reactome_random_pathways: float = 1.0
    screen_coverage: float = 0.7
    screen_noise: float = 1.0

    #: fields that are probabilities of keeping true information (raised to the power F); the others are
    #: amounts of false information (multiplied by F; the probabilities among them capped at 1)
    KEEP = ("string_coverage", "string_recall", "go_coverage", "go_function_precision", "reactome_coverage",
            "reactome_member_min", "reactome_member_max", "reactome_cascade_fraction", "screen_coverage")
    PROBABILITIES = ("go_wrong_fraction", "go_not_fraction")

    @classmethod
    def scaled(cls, factor: float) -> "SourceNoise":
        """All noise levels scaled by ``factor`` (see the module docstring); ``1`` returns the defaults."""
        if not (math.isfinite(factor) and factor >= 0):
            raise ValueError(f"--graph-noise must be a finite number >= 0, got {factor}")
        default = cls()
        if factor == 1:
            return default  # exactly today's values, not values recomputed through a power
        values = {}
        for f in fields(cls):
            v = getattr(default, f.name)
            if f.name in cls.KEEP:
                values[f.name] = float(v ** factor)
            elif isinstance(v, int):
                values[f.name] = int(round(v * factor))
            else:
                values[f.name] = min(1.0, v * factor) if f.name in cls.PROBABILITIES else v * factor
        return cls(**values)

    def kwargs(self, source: str) -> dict:
        """The keyword arguments of one source's writer (``string``, ``go``, ``reactome``, ``screen``)."""
        prefix = f"{source}_"
        return {f.name[len(prefix):]: getattr(self, f.name) for f in fields(self) if f.name.startswith(prefix)}


def covered_genes(net: GroundTruthNetwork, rng: np.random.Generator, coverage: float) -> np.ndarray:
    """Boolean ``(N,)`` mask: the genes a source knows about (each independently with prob ``coverage``)."""
    return rng.random(net.n_genes) < coverage


# ---------------------------------------------------------------------- STRING
def write_string(net: GroundTruthNetwork, out_dir: Path, seed: int, coverage: float = 0.85,
                 recall: float = 0.75, false_fraction: float = 0.25, score_sd: float = 80.0) -> dict:
    """``protein.links`` + ``protein.info`` (both gzip) under ``out_dir/string/``.

    ``false_fraction`` false pairs per kept true pair; ``score_sd`` the noise of the true pairs' scores.
    """
    rng = np.random.default_rng(seed)
    cov = covered_genes(net, rng, coverage)
    strength = net.undirected_strength()
    iu, ju = np.triu_indices(net.n_genes, k=1)
    true = (strength[iu, ju] > 0) & cov[iu] & cov[ju]
    keep = true & (rng.random(len(iu)) < recall)
    scores = np.full(len(iu), -1.0)
    scores[keep] = 300 + 600 * np.minimum(1.0, strength[iu, ju][keep] / 1.2) + rng.normal(0, score_sd, int(keep.sum()))
    candidates = np.flatnonzero(~true & cov[iu] & cov[ju])
    n_false = min(len(candidates), int(round(false_fraction * keep.sum())))
    false = rng.choice(candidates, size=n_false, replace=False)
    scores[false] = rng.normal(400, 150, n_false)
    pairs = np.flatnonzero(scores >= 0)
    score_int = np.clip(np.round(scores[pairs]), 150, 999).astype(np.int64)

    protein_no = rng.choice(np.arange(100000, 1000000), size=net.n_genes, replace=False)
    ids = np.asarray([f"9606.ENSP00000{n:06d}" for n in protein_no])
    a, b = ids[iu[pairs]], ids[ju[pairs]]
    rows = sorted(zip(np.concatenate([a, b]).tolist(), np.concatenate([b, a]).tolist(),
                      np.concatenate([score_int, score_int]).tolist()))
    links = "protein1 protein2 combined_score\n" + "".join(f"{p} {q} {s}\n" for p, q, s in rows)
    write_text(out_dir / STRING_LINKS, links)

    sizes = rng.integers(80, 2500, size=net.n_genes)
    info_rows = sorted((ids[g], net.genes[g], int(sizes[g])) for g in np.flatnonzero(cov))
    info = "#string_protein_id\tpreferred_name\tprotein_size\tannotation\n" + "".join(
        f"{pid}\t{name}\t{size}\tsimulated protein {name}\n" for pid, name, size in info_rows)
    write_text(out_dir / STRING_INFO, info)
    return {"links": STRING_LINKS, "info": STRING_INFO, "proteins": int(cov.sum()), "pairs": int(len(pairs)),
            "true_pairs": int(keep.sum()), "false_pairs": int(n_false), "lines": 2 * int(len(pairs))}


# ---------------------------------------------------------------------- GO
def _go_terms(net: GroundTruthNetwork, rng: np.random.Generator) -> tuple[list[dict], dict]:
    """The ontology: a list of term dicts and the ids each gene group maps to."""
    terms: list[dict] = []
    next_id = iter(range(9900001, 9999999))

    def term(name: str, namespace: str, is_a: list[str], part_of: list[str] = (), **extra) -> str:
        tid = f"GO:{next(next_id):07d}"
        terms.append({"id": tid, "name": name, "namespace": namespace, "is_a": list(is_a),
                      "part_of": list(part_of), **extra})
        return tid

    for namespace, (rid, _) in GO_ROOTS.items():
        terms.append({"id": rid, "name": namespace, "namespace": namespace, "is_a": [], "part_of": []})
    bp_root = GO_ROOTS["biological_process"][0]
    module_term, branch_terms = {}, {}
    for k in range(net.n_modules):
        module_term[k] = term(f"simulated process {k + 1}", "biological_process", [bp_root])
        branch_terms[k] = [term(f"simulated process {k + 1}, branch {c}", "biological_process", [module_term[k]])
                           for c in "ab"]
    # link terms: module k and a module it regulates form a larger process (part_of)
    n_links = max(1, net.n_modules // 3)
    for k in rng.choice(net.n_modules, size=n_links, replace=False).tolist():
        other = int((k + 1) % net.n_modules)
        link = term(f"simulated super-process {k + 1}-{other + 1}", "biological_process", [bp_root])
        for m in (k, other):
            terms[[t["id"] for t in terms].index(module_term[m])]["part_of"].append(link)
    mf_root = GO_ROOTS["molecular_function"][0]
    functions = [term(f"simulated molecular function {i + 1}", "molecular_function", [mf_root])
                 for i in range(max(2, net.n_modules // 2))]
    cc_root = GO_ROOTS["cellular_component"][0]
    nucleus = term("simulated nucleus", "cellular_component", [cc_root])
    compartments = [nucleus,
                    term("simulated nucleoplasm", "cellular_component", [cc_root], [nucleus]),
                    term("simulated cytoplasm", "cellular_component", [cc_root]),
                    term("simulated membrane", "cellular_component", [cc_root])]
    # an alt_id and an obsolete term, as in the real file
    terms[[t["id"] for t in terms].index(module_term[0])]["alt_id"] = f"GO:{next(next_id):07d}"
    term("obsolete simulated process", "biological_process", [], is_obsolete=True)
    return terms, {"module": module_term, "branch": branch_terms, "functions": functions,
                   "compartments": compartments}


def _obo_text(terms: list[dict]) -> str:
    names = {t["id"]: t["name"] for t in terms}
    out = ["format-version: 1.2", "data-version: releases/simulated", "default-namespace: gene_ontology",
           "ontology: go", "remark: simulated by txpert simulate; not biology", ""]
    for t in sorted(terms, key=lambda t: t["id"]):
        out += ["[Term]", f"id: {t['id']}", f"name: {t['name']}", f"namespace: {t['namespace']}"]
        if "alt_id" in t:
            out.append(f"alt_id: {t['alt_id']}")
        out.append(f'def: "Simulated term: {t["name"]}." []')
        if t.get("is_obsolete"):
            out.append("is_obsolete: true")
        out += [f"is_a: {p} ! {names[p]}" for p in t["is_a"]]
        out += [f"relationship: part_of {p} ! {names[p]}" for p in t["part_of"]]
        out.append("")
    for name in ("negatively_regulates", "part_of", "positively_regulates", "regulates"):
        out += ["[Typedef]", f"id: {name}", f"name: {name.replace('_', ' ')}"]
        if name != "part_of":
            out.append("is_a: regulates ! regulates" if name != "regulates" else "transitive_over: part_of ! part of")
        out.append("")
    return "\n".join(out)


def write_go(net: GroundTruthNetwork, out_dir: Path, seed: int, coverage: float = 0.75,
             wrong_fraction: float = 0.1, not_fraction: float = 0.05, function_precision: float = 0.6) -> dict:
    """``go-basic.obo`` (plain text) + a GAF 2.2 (gzip) under ``out_dir/go/``.

    Per covered gene: a wrong BP annotation with prob ``wrong_fraction``, a NOT-qualified one with prob
    ``not_fraction``; an MF annotation (60 %) names the module's function with prob ``function_precision``.
    """
    rng = np.random.default_rng(seed)
    terms, ids = _go_terms(net, rng)
    write_text(out_dir / GO_OBO, _obo_text(terms))
    cov = covered_genes(net, rng, coverage)
    branch_of = rng.integers(0, 2, size=net.n_genes)
    all_branches = [t for k in range(net.n_modules) for t in ids["branch"][k]]
    n_fun = len(ids["functions"])
    rows: set[tuple] = set()
    for g in np.flatnonzero(cov).tolist():
        k = int(net.module[g])
        ev = lambda: EVIDENCE[int(rng.integers(len(EVIDENCE)))]  # noqa: E731
        target = ids["branch"][k][branch_of[g]] if rng.random() < 0.8 else ids["module"][k]
        rows.add((g, "", target, ev(), "P"))
        if rng.random() < 0.3:  # the same annotation with a second evidence code, as in real files
            rows.add((g, "", target, ev(), "P"))
        if rng.random() < wrong_fraction:
            rows.add((g, "", all_branches[int(rng.integers(len(all_branches)))], ev(), "P"))
        if rng.random() < not_fraction:
            wrong = [t for t in all_branches if t not in ids["branch"][k]]
            rows.add((g, "NOT|", wrong[int(rng.integers(len(wrong)))], ev(), "P"))
        if rng.random() < 0.6:
            f = k % n_fun if rng.random() < function_precision else int(rng.integers(n_fun))
            rows.add((g, "", ids["functions"][f], ev(), "F"))
        if rng.random() < 0.7:
            rows.add((g, "", ids["compartments"][int(rng.integers(len(ids["compartments"])))], ev(), "C"))
    header = ["!gaf-version: 2.2", "!generated-by: txpert simulate", "!date-generated: 2024-01-01",
              "!note: simulated annotations of simulated genes (G0001...); not biology"]
    lines = []
    for g, neg, go_id, evidence, aspect in sorted(rows):
        sym = net.genes[g]
        cols = ["NCBIGene", str(900001 + g), sym, f"{neg}{QUALIFIER[aspect]}", go_id, "PMID:0", evidence, "",
                aspect, f"simulated gene {sym}", "", "protein", "taxon:9606", "20240101", "txpert-sim", "", ""]
        lines.append("\t".join(cols))
    write_text(out_dir / GO_GAF, "\n".join(header + lines) + "\n")
    return {"obo": GO_OBO, "gaf": GO_GAF, "terms": len(terms), "annotated_genes": int(cov.sum()),
            "annotation_lines": len(lines), "not_lines": sum(1 for r in rows if r[1])}


# ---------------------------------------------------------------------- Reactome
def write_reactome(net: GroundTruthNetwork, out_dir: Path, seed: int, coverage: float = 0.6,
                   member_min: float = 0.5, member_max: float = 0.9, cascade_fraction: float = 0.6,
                   max_extra: int = 2, random_pathways: float = 1.0) -> dict:
    """``ReactomePathways.sim.gmt`` under ``out_dir/reactome/``.

    A module pathway holds a ``U(member_min, member_max)`` share of its module plus ``0..max_extra`` random
    genes; a cascade pathway ``cascade_fraction`` of two linked modules; ``random_pathways`` scales the
    number of small pathways of random genes (``max(2, modules // 2)`` at 1).
    """
    rng = np.random.default_rng(seed)
    cov = covered_genes(net, rng, coverage)
    pathways: list[tuple[str, list[int]]] = []
    for k in range(net.n_modules):
        members = np.flatnonzero(net.module == k)
        for j in range(int(rng.integers(1, 3))):
            part = members[rng.random(len(members)) < rng.uniform(member_min, member_max)]
            n_extra = min(net.n_genes, int(rng.integers(0, max_extra + 1)))
            extra = rng.choice(net.n_genes, size=n_extra, replace=False)
            pathways.append((f"Simulated-signalling-module-{k + 1}-pathway-{j + 1}", np.union1d(part, extra).tolist()))
    for k in rng.choice(net.n_modules, size=max(1, net.n_modules // 3), replace=False).tolist():
        other = (k + 1) % net.n_modules
        both = np.flatnonzero((net.module == k) | (net.module == other))
        in_cascade = both[rng.random(len(both)) < cascade_fraction]
        pathways.append((f"Simulated-cascade-{k + 1}-to-{other + 1}", in_cascade.tolist()))
    for j in range(int(round(random_pathways * max(2, net.n_modules // 2)))):
        pathways.append((f"Simulated-small-complex-{j + 1}",
                         rng.choice(net.n_genes, size=int(rng.integers(3, 7)), replace=False).tolist()))
    lines = []
    for i, (name, genes) in enumerate(pathways):
        kept = sorted(net.genes[g] for g in genes if cov[g])
        if kept:
            lines.append((name, f"R-HSA-{9000001 + i}", kept))
    text = "".join(f"{name}\t{rid}\t" + "\t".join(genes) + "\n" for name, rid, genes in sorted(lines))
    write_text(out_dir / REACTOME_GMT, text)
    return {"gmt": REACTOME_GMT, "pathways": len(lines), "genes": int(len({g for _, _, gs in lines for g in gs}))}


# ---------------------------------------------------------------------- screen embeddings
def write_screen(net: GroundTruthNetwork, out_dir: Path, seed: int, coverage: float = 0.7, dim: int = 32,
                 noise: float = 1.0) -> dict:
    """A gene-embedding table (parquet: ``gene`` + ``z_1..z_dim`` float32) under ``out_dir/screen/``.

    ``E = Â² F + noise · N(0, 1)`` with ``F ~ N(0, 1)`` of shape ``(N, dim)`` and ``Â = D^{-1/2}(A + I)D^{-1/2}``
    for ``A = |W| + |W|^T``: genes close in the network get similar rows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    cov = covered_genes(net, rng, coverage)
    a = net.undirected_strength() + np.eye(net.n_genes)
    d = 1.0 / np.sqrt(a.sum(axis=1))
    a_hat = a * d[:, None] * d[None, :]
    emb = a_hat @ (a_hat @ rng.normal(size=(net.n_genes, dim)))
    emb = emb / emb.std() + noise * rng.normal(size=emb.shape)
    rows = np.flatnonzero(cov)
    columns = {"gene": pa.array(net.genes[rows].tolist(), type=pa.string())}
    for j in range(dim):
        columns[f"z_{j + 1}"] = pa.array(emb[rows, j].astype(np.float32))
    table = pa.table(columns)
    with atomic_path(out_dir / SCREEN_PARQUET) as tmp:
        pq.write_table(table, tmp, compression="snappy")
    return {"parquet": SCREEN_PARQUET, "genes": int(len(rows)), "dim": dim}
