"""The VCC block agrees with Arc's cell-eval (the Virtual Cell Challenge's reference evaluator).

Runs the real ``cell-eval`` (0.8.2, DE by ``pdex``; the ``vcc`` extra of setup.cfg) on the same cells as
:func:`txpert_head.metrics.vcc.vcc_scores` and asserts agreement to 1e-6 per perturbation for DES
(``overlap_at_N``), PDS (``discrimination_score_l1``), MAE (``mae``) and the VCC Pearson Δ
(``pearson_delta``), and for S (``cell-eval score``'s ``avg_score`` × 100), on single perturbations and on
combinations. Also: ``txpert predict --cells`` output goes through ``cell-eval run`` unchanged, and scanpy's
``rank_genes_groups`` runs on it.

cell-eval missing: the tests skip, except under ``TXPERT_REQUIRE_CELL_EVAL=1`` (set by ``.ci/run``), where the
import error is raised so that CI fails instead of silently skipping.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from txpert_head.runs.cell_output import PERT_COL, cells_anndata, truth_cells_anndata
from txpert_head.data.perturb_data import CONTROL
from txpert_head.simulate.fixtures import synthetic_data
from txpert_head.metrics.vcc import cell_mean_baseline, label_gene_indices, vcc_scores

if importlib.util.find_spec("cell_eval") is None and os.environ.get("TXPERT_REQUIRE_CELL_EVAL") == "1":
    import cell_eval  # noqa: F401  (raises the real import error: CI must not skip these tests)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("cell_eval") is None,
                                reason="cell-eval is not installed (pip install -e '.[vcc]')")
TOL = 1e-6


# ---------------------------------------------------------------------------- fixtures
def _dataset(n_doubles: int, seed: int):
    """Simulated log-normalised cells: 12 singles (+ ``n_doubles`` combinations) over 40 genes."""
    data = synthetic_data(n_cells=1400, n_genes=40, n_perts=12, n_doubles=n_doubles, seed=seed)
    cond = data.condition
    x = data.X.toarray().astype(np.float64)
    perts = sorted(set(cond) - {CONTROL})
    true = {p: x[cond == p] for p in perts}
    return data, true, x[cond == CONTROL], x[cond != CONTROL]


def _predictions(true: dict[str, np.ndarray], seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Three prediction sets of different quality: noisy truth, half the labels swapped, the truth of another
    perturbation (shifted); noise makes some values negative, which both sides see clipped at 0."""
    rng = np.random.default_rng(seed)
    perts = list(true)
    noisy = {p: c + rng.normal(0, 0.25, c.shape) for p, c in true.items()}
    perm = rng.permutation(len(perts))
    swapped = {p: true[perts[perm[i]]] if i % 2 else true[p] * rng.uniform(0.8, 1.2, true[p].shape)
               for i, p in enumerate(perts)}
    other = {p: np.roll(true[perts[(i + 1) % len(perts)]], 1, axis=0) + 0.05 for i, p in enumerate(perts)}
    return {"noisy": noisy, "swapped": swapped, "other": other}


def _as_adata(cells: dict[str, np.ndarray], control: np.ndarray, genes):
    """The file layout of ``txpert predict --cells``, kept in float64 so that both sides read the same numbers."""
    adata = cells_anndata({p: np.maximum(c, 0.0) for p, c in cells.items()}, control, genes, cell_line="all",
                          normalization={"target_sum": 4000})
    adata.X = np.maximum(np.vstack([*cells.values(), control]), 0.0).astype(np.float64)
    return adata


def _cell_eval(pred, real, outdir: Path, profile: str):
    from cell_eval import MetricsEvaluator

    ev = MetricsEvaluator(adata_pred=pred, adata_real=real, control_pert=CONTROL, pert_col=PERT_COL,
                          num_threads=1, outdir=str(outdir))
    results, agg = ev.compute(profile=profile, write_csv=False)
    return results.to_pandas().set_index("perturbation"), agg


def _agreement(n_doubles: int, seed: int, tmp_path: Path) -> dict[str, float]:
    """Max |ours − cell-eval| per metric over every prediction set and perturbation (and S)."""
    from cell_eval import score_agg_metrics

    data, true, control, perturbed = _dataset(n_doubles, seed)
    genes = list(data.genes)
    real = _as_adata(true, control, genes)
    base = cell_mean_baseline(perturbed, {p: len(c) for p, c in true.items()})
    exclude = dict(zip(true, label_gene_indices(list(true), genes)))
    _, base_agg = _cell_eval(_as_adata(base, control, genes), real, tmp_path / "base", "vcc")
    diffs = {"des": 0.0, "pds": 0.0, "mae": 0.0, "pearson_delta": 0.0, "S": 0.0}
    for name, pred in _predictions(true, seed).items():
        ours = vcc_scores(pred, true, control, base, exclude_genes=exclude)
        theirs, _ = _cell_eval(_as_adata(pred, control, genes), real, tmp_path / name, "minimal")
        _, agg = _cell_eval(_as_adata(pred, control, genes), real, tmp_path / f"{name}_vcc", "vcc")
        assert sorted(theirs.index) == sorted(true)
        for ours_key, col in (("des", "overlap_at_N"), ("pds", "discrimination_score_l1"), ("mae", "mae"),
                              ("pearson_delta", "pearson_delta")):
            a = np.array([ours["per_perturbation"][p][ours_key] for p in true])
            b = theirs.loc[list(true), col].to_numpy(dtype=float)
            diffs[ours_key] = max(diffs[ours_key], float(np.max(np.abs(a - b))))
        score = score_agg_metrics(agg, base_agg).to_pandas().set_index("metric")["from_baseline"]
        diffs["S"] = max(diffs["S"], abs(ours["score"] - 100 * float(score["avg_score"])))
        # the prediction sets are not degenerate: DES and PDS vary, S lies strictly between 0 and 100
        assert 0.0 < ours["score"] < 100.0, (name, ours["score"])
    return diffs


# ---------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("n_doubles", [0, 8], ids=["singles", "singles+combinations"])
def test_vcc_block_equals_cell_eval(n_doubles, tmp_path):
    diffs = _agreement(n_doubles, seed=3, tmp_path=tmp_path)
    print(f"max |ours - cell-eval| ({'combinations' if n_doubles else 'singles'}): {diffs}")
    for metric, d in diffs.items():
        assert d <= TOL, (metric, d)


# ---------------------------------------------------------------------------- predict --cells -> cell-eval run
@pytest.fixture(scope="module")
def cells_run(tmp_path_factory):
    """A tiny trained run on simulated counts (with combinations) and its ``predict --cells`` output."""
    from click.testing import CliRunner

    from txpert_files import write_cli_inputs
    from txpert_head.cli.main import main

    root = tmp_path_factory.mktemp("cells")
    write_cli_inputs(root, n_doubles=8, epochs=1, eval_cells=40, control_mode="batch")
    run = root / "run"
    common = ["--data", str(root / "d.h5ad"), "--perturbation-col", "gene", "--batch-col", "rep"]
    res = CliRunner().invoke(main, ["train", *common, "--graph", str(root / "g.kg.npz"), "--config",
                                    str(root / "train.toml"), "--no-vcc", "--no-baselines", "-o", str(run)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    from txpert_head.runs.folder import load_run

    trainer, _ = load_run(run)
    # test and training perturbations alike (the file layout is what is tested): 6 singles and 4 combinations
    every = sorted(set(trainer.data.condition) - {CONTROL})
    perts = sorted([p for p in every if "+" not in p][:6] + [p for p in every if "+" in p][:4])
    assert sum("+" in p for p in perts) == 4
    out = root / "pred_cells.h5ad"
    args = ["predict", str(run), *[a for p in perts for a in ("-p", p)], "--cells", "30", "-o", str(out)]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    real = root / "real_cells.h5ad"
    truth_cells_anndata(trainer.data, "all", perts).write_h5ad(real)
    return out, real, perts


def test_predict_cells_layout(cells_run):
    import anndata

    out, real, perts = cells_run
    a = anndata.read_h5ad(out)
    labels = a.obs[PERT_COL]
    assert isinstance(labels.dtype, pd.CategoricalDtype)
    counts = labels.value_counts()
    assert all(counts[p] == 30 for p in perts) and counts[CONTROL] > 0
    assert set(labels.cat.categories) == {CONTROL, *perts}
    assert np.asarray(a.X).min() >= 0.0 and a.uns["clipped_at_zero"]
    assert "log1p" in a.uns and a.uns["normalization"]["target_sum"] == 4000
    b = anndata.read_h5ad(real)
    assert list(a.var_names) == list(b.var_names) and a.var_names[0] == "G0"
    # the same control cells in the prediction and the truth
    ctrl_a, ctrl_b = a[a.obs[PERT_COL] == CONTROL], b[b.obs[PERT_COL] == CONTROL]
    np.testing.assert_array_equal(np.asarray(ctrl_a.X), np.asarray(ctrl_b.X))


def test_scanpy_rank_genes_groups_runs_on_predict_cells(cells_run):
    import anndata
    sc = pytest.importorskip("scanpy")

    out, _, perts = cells_run
    a = anndata.read_h5ad(out)
    sc.tl.rank_genes_groups(a, groupby=PERT_COL, reference=CONTROL, method="wilcoxon")
    names = a.uns["rank_genes_groups"]["names"]
    assert set(names.dtype.names) == set(perts)


@pytest.mark.slow  # about 10 s: a cell-eval subprocess (imports, numba compilation) on top of the fixture
def test_cell_eval_run_accepts_predict_cells(cells_run, tmp_path):
    """``cell-eval run`` (its command line, as a user runs it) on ``txpert predict --cells`` against a truth file
    written the same way; its per-perturbation numbers equal the VCC block's on the files' values."""
    import anndata

    out, real, perts = cells_run
    exe = Path(sys.executable).with_name("cell-eval")
    cmd = [str(exe) if exe.exists() else "cell-eval", "run", "-ap", str(out), "-ar", str(real), "--pert-col", PERT_COL,
           "--control-pert", CONTROL, "--profile", "minimal", "--num-threads", "1", "-o", str(tmp_path / "ce")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = pd.read_csv(tmp_path / "ce" / "results.csv").set_index("perturbation")
    assert sorted(res.index) == perts
    # ours on the same (float32) values: the ranks behind DES and PDS agree exactly, MAE to float32 precision
    a, b = anndata.read_h5ad(out), anndata.read_h5ad(real)

    def groups(x):
        lab = x.obs[PERT_COL].astype(str).to_numpy()
        X = np.asarray(x.X, dtype=np.float64)
        return {p: X[lab == p] for p in perts}, X[lab == CONTROL]

    pred, _ = groups(a)
    true, control = groups(b)
    ours = vcc_scores(pred, true, control, exclude_genes=dict(zip(perts, label_gene_indices(perts, list(a.var_names)))))
    for key, col, tol in (("des", "overlap_at_N", TOL), ("pds", "discrimination_score_l1", TOL), ("mae", "mae", 1e-5)):
        got = np.array([ours["per_perturbation"][p][key] for p in perts])
        np.testing.assert_allclose(got, res.loc[perts, col].to_numpy(dtype=float), atol=tol, err_msg=key)


# ---------------------------------------------------------------------------- real data
@pytest.mark.slow
def test_vcc_block_equals_cell_eval_on_norman(shared_data, tmp_path):
    """Real cells (Norman 2019 subset: 18 singles and 15 combinations, 500 genes): one random half of each
    perturbation's cells predicts the other half, against the cell-mean baseline; ours equals cell-eval's."""
    import anndata
    from cell_eval import score_agg_metrics

    adata = anndata.read_h5ad(shared_data / "perturbseq" / "norman2019_k562_subset.h5ad")
    x = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, dtype=np.float64)
    cond = adata.obs["condition"].astype(str).to_numpy()
    genes = adata.var_names.tolist()
    perts = sorted(set(cond) - {"control"})
    assert sum("+" in p for p in perts) >= 10
    rng = np.random.default_rng(0)
    pred, true = {}, {}
    for p in perts:
        idx = rng.permutation(np.flatnonzero(cond == p))
        pred[p], true[p] = x[idx[: len(idx) // 2]], x[idx[len(idx) // 2:]]
    control = x[cond == "control"]
    base = cell_mean_baseline(x[cond != "control"], {p: len(c) for p, c in true.items()})
    ours = vcc_scores(pred, true, control, base, exclude_genes=dict(zip(perts, label_gene_indices(perts, genes))))
    real = _as_adata(true, control, genes)
    theirs, _ = _cell_eval(_as_adata(pred, control, genes), real, tmp_path / "pred", "minimal")
    _, agg = _cell_eval(_as_adata(pred, control, genes), real, tmp_path / "pred_vcc", "vcc")
    _, base_agg = _cell_eval(_as_adata(base, control, genes), real, tmp_path / "base", "vcc")
    for key, col in (("des", "overlap_at_N"), ("pds", "discrimination_score_l1"), ("mae", "mae"),
                     ("pearson_delta", "pearson_delta")):
        got = np.array([ours["per_perturbation"][p][key] for p in perts])
        np.testing.assert_allclose(got, theirs.loc[perts, col].to_numpy(dtype=float), atol=TOL, rtol=0, err_msg=key)
    score = score_agg_metrics(agg, base_agg).to_pandas().set_index("metric")["from_baseline"]
    assert ours["score"] == pytest.approx(100 * float(score["avg_score"]), abs=TOL)
    assert 0.0 < ours["score"] < 100.0
