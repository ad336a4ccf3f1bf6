"""Fuzz test of the txpert data path (issue 14): random obs columns, perturbation labels, gene names and
expression values, written as an ``.h5ad`` and given to ``txpert train``, end in a valid run or one clean
``Error:`` line -- never a traceback, never a partial run folder. (25 derandomized examples, about half of
them valid runs: ~10 s.)"""

from __future__ import annotations

import itertools

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from txpert_files import BASE_TRAIN_OPTIONS, toml_text
from txpert_head.cli.main import main
from txpert_head.simulate.fixtures import synthetic_graph

GENES = [f"G{i}" for i in range(12)]  # graph nodes G0..G29 (synthetic_graph(30))
# usable labels (weighted: controls, graph genes, combinations, GEARS-style and unknown genes) ...
GOOD = ["ctrl"] * 8 + GENES * 2 + ["G1+G2", "G3+G4", "G2+G5", "G3+ctrl", "ctrl+ctrl", "G0+G1+G2", "FOO1", "FOO1+G2",
                                   "nan", "7"]
# ... and malformed ones, a few of which are put into some files (None: a missing label, NaN)
BAD = ["", " ", "G1 G2", "G1++G2", "G1+G1", "+", "Ä", "G1;G2", "ctrl+", None]
VALUES = ["counts"] * 5 + ["lognorm"] * 3 + ["few_negative", "many_negative", "unlogged", "nan", "inf", "zeros",
                                             "binary", "huge", "integers_small"]


@st.composite
def datasets(draw):
    n = draw(st.integers(0, 90))
    labels = draw(st.lists(st.sampled_from(GOOD), min_size=n, max_size=n))
    if n and draw(st.integers(0, 4)) == 4:  # a fifth of the files get a few malformed labels
        for _ in range(draw(st.integers(1, 3))):
            labels[draw(st.integers(0, n - 1))] = draw(st.sampled_from(BAD))
    return {
        "labels": labels,
        "label_col": draw(st.sampled_from(["gene"] * 9 + ["other"])),
        "categorical": draw(st.booleans()),
        "batches": draw(st.sampled_from([None, ["a"], None, ["a", "b"], ["a", "b", "c"], ["a", "b"],
                                         ["a", "b", None]])),  # (None in a list: a missing batch)
        "lines": draw(st.sampled_from([None, None, None, ["L1"], ["L1", "L2"]])),
        "extra_cols": draw(st.lists(st.sampled_from(["x", "perturbation", "batch", "n_counts"]), max_size=2,
                                    unique=True)),
        "n_genes": draw(st.sampled_from([30, 30, 30, 12, 1])),
        "duplicate_gene": draw(st.sampled_from([False] * 7 + [True])),
        "values": draw(st.sampled_from(VALUES)),
        "sparse": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
        "task": draw(st.sampled_from(["unseen_single", "unseen_single", "double", "cross_cell_line"])),
        "baselines": draw(st.booleans()),
    }


_ids = itertools.count()


def _expression(kind: str, n: int, g: int, rng: np.random.Generator) -> np.ndarray:
    counts = rng.poisson(3.0, size=(n, g)).astype(np.float32)
    if kind == "counts":
        return counts
    if kind == "lognorm":
        return np.log1p(counts * 1.7)
    if kind == "few_negative":
        if counts.size:
            counts.flat[rng.choice(counts.size, min(5, counts.size), replace=False)] = -3
        return counts
    if kind == "many_negative":
        return rng.normal(size=(n, g)).astype(np.float32)
    if kind == "unlogged":
        return counts * 37.5
    if kind == "nan":
        if counts.size:
            counts.flat[rng.integers(counts.size)] = np.nan
        return counts
    if kind == "inf":
        if counts.size:
            counts.flat[rng.integers(counts.size)] = np.inf
        return counts
    if kind == "zeros":
        return np.zeros((n, g), np.float32)
    if kind == "binary":
        return (counts > 2).astype(np.float32)
    if kind == "huge":  # integer-valued, finite in float32, but row sums overflow float32
        return (counts.astype(np.float64) * 1e37).astype(np.float32)
    if kind == "integers_small":  # integers that are not counts: max 1 (binary-like) and a few 0/1
        return (counts > 4).astype(np.float32) * 1.0
    raise AssertionError(kind)


def _write(spec: dict, path) -> None:
    rng = np.random.default_rng(spec["seed"])
    n, g = len(spec["labels"]), spec["n_genes"]
    labels = [None if v is None else v for v in spec["labels"]]  # None: a missing label (NaN)
    obs = pd.DataFrame(index=[f"c{i}" for i in range(n)])
    as_category = spec["categorical"] or None in labels  # (h5ad keeps a missing string label only as a category)
    obs[spec["label_col"]] = pd.Categorical(labels) if as_category else np.asarray(labels, dtype=object)
    if spec["batches"] is not None:
        obs["rep"] = [spec["batches"][i % len(spec["batches"])] for i in rng.permutation(n)]
    if spec["lines"] is not None:
        obs["line"] = [spec["lines"][i % len(spec["lines"])] for i in rng.permutation(n)]
    for col in spec["extra_cols"]:
        obs[col] = rng.integers(0, 3, size=n)
    genes = [f"G{i}" for i in range(g)]
    if spec["duplicate_gene"] and g > 1:
        genes[-1] = genes[0]
    X = _expression(spec["values"], n, g, rng)
    X = sp.csr_matrix(X) if spec["sparse"] else X
    anndata.AnnData(X, obs=obs, var=pd.DataFrame(index=genes)).write_h5ad(path)


def train_args(spec: dict, data, inputs, out) -> list[str]:
    """``txpert train`` on the file of ``spec`` (graph and options in ``inputs``), run folder ``out``."""
    args = ["train", "--data", str(data), "--perturbation-col", "gene", "--graph", str(inputs / "g.kg.npz"),
            "--config", str(inputs / "train.toml"), "--task", spec["task"], "--no-vcc", "-o", str(out)]
    if spec["task"] == "cross_cell_line":
        args += ["--holdout-line", "L2"]
    if spec["batches"] is not None:
        args += ["--batch-col", "rep"]
    if spec["lines"] is not None:
        args += ["--cell-line-col", "line"]
    if not spec["baselines"]:
        args += ["--no-baselines"]
    return args


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_inputs")
    synthetic_graph(30, seed=2).save(root / "g.kg.npz")
    (root / "train.toml").write_text(toml_text({**BASE_TRAIN_OPTIONS, "epochs": 1, "eval_cells": 32}))
    return root


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(spec=datasets())
def test_fuzz_train_gives_a_valid_run_or_a_clean_error(inputs, tmp_path_factory, spec):
    work = tmp_path_factory.mktemp(f"fuzz{next(_ids)}")
    data = work / "d.h5ad"
    _write(spec, data)
    out = work / "runs" / "r"
    res = CliRunner().invoke(main, train_args(spec, data, inputs, out))
    assert res.exception is None or isinstance(res.exception, SystemExit), (spec, res.output, repr(res.exception))
    assert "Traceback" not in res.output, res.output
    if res.exit_code == 0:
        for name in ("config.json", "split.json", "metrics.json", "per_perturbation.csv", "checkpoints/best.pt",
                     "checkpoints/last.pt"):
            assert (out / name).exists(), (name, spec)
        assert not (out / ".lock").exists()
    else:
        assert res.exit_code == 1, (spec, res.output)
        assert any(line.startswith("Error: ") for line in res.output.splitlines()), res.output
        assert not (work / "runs").exists(), (spec, res.output, sorted(p.name for p in work.rglob("*")))
