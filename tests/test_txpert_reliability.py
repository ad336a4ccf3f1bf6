"""Reliability of the txpert commands (issue 14, txpert part): a run folder changes only once a run is
accepted, every bad input is one clean ``Error:`` line (no traceback, no partial run folder), and nothing
a user already has is lost."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from txpert_files import write_cli_inputs, write_h5ad
from txpert_head.cli.main import main
from txpert_head.data.perturb_data import DataError, load_h5ad
from txpert_head.training.config import TrainConfig


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    data = write_cli_inputs(root, n_cells=600, epochs=1)
    return root, data


@pytest.fixture(scope="module")
def finished(files, tmp_path_factory):
    """A finished one-epoch run folder (never modified: tests copy it)."""
    root, _ = files
    run = tmp_path_factory.mktemp("finished") / "run"
    res = _train(root, run)
    assert res.exit_code == 0, res.output
    return run


def _train(root: Path, out: Path, *extra: str, data: Path | None = None, config: bool = True):
    args = ["train", "--data", str(data or root / "d.h5ad"), "--perturbation-col", "gene", "--batch-col", "rep",
            "--graph", str(root / "g.kg.npz"), "--no-baselines", "--no-vcc"]
    if config:
        args += ["--config", str(root / "train.toml")]
    return CliRunner().invoke(main, [*args, *extra, "-o", str(out)])


def _clean_error(res, *fragments: str) -> None:
    """Exit code 1, one ``Error:`` line, no traceback; every fragment is in the message."""
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Error:" in res.output and "Traceback" not in res.output, res.output
    for text in fragments:
        assert text in res.output, (text, res.output)


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


# ---------------------------------------------------------------------- 3. a refused resume changes nothing
def test_refused_resume_leaves_the_finished_run_untouched(files, finished, tmp_path):
    root, _ = files
    run = _copy_run(finished, tmp_path / "run")
    before = _snapshot(run)
    res = _train(root, run, "--set", "hidden=32")
    _clean_error(res, "different training options", "hidden", "16", "32")
    assert _snapshot(run) == before  # config.json, split.json, checkpoints: byte for byte
    res = CliRunner().invoke(main, ["evaluate", str(run), "--no-baselines", "--no-vcc"])
    assert res.exit_code == 0, res.output


def test_resume_on_other_data_leaves_the_run_untouched(files, finished, tmp_path):
    root, data = files
    run = _copy_run(finished, tmp_path / "run")
    before = _snapshot(run)
    res = _train(root, run, "--split-seed", "3")
    _clean_error(res, "other data, graph or task")
    assert _snapshot(run) == before


# ---------------------------------------------------------------------- 5. normalisation never skipped silently
def _counts_with_negatives(files, tmp_path) -> Path:
    _, data = files
    X = data.X.toarray()
    rows, cols = np.nonzero(X)
    X[rows[:5], cols[:5]] = -3  # five negative entries in a raw-count matrix
    return write_h5ad(type(data)(X, data.genes, data.condition, data.cell_line, data.batch), tmp_path / "neg.h5ad")


def test_counts_with_a_few_negative_entries_are_refused_with_the_reason_and_the_override(files, tmp_path):
    root, _ = files
    path = _counts_with_negatives(files, tmp_path)
    with pytest.raises(DataError, match=r"5 negative") as err:
        load_h5ad(path, "gene", batch_col="rep")
    assert "--normalize" in str(err.value) and "integer" in str(err.value)
    res = _train(root, tmp_path / "run", data=path)
    _clean_error(res, "5 negative", "--normalize none")
    assert not (tmp_path / "run").exists()
    # the override: as is; normalising negative counts is refused too
    assert load_h5ad(path, "gene", batch_col="rep", normalize="none").X.max() > 20
    with pytest.raises(DataError, match="negative"):
        load_h5ad(path, "gene", batch_col="rep", normalize="counts")


def test_unlogged_values_used_as_is_give_a_loud_warning(files, tmp_path, caplog):
    _, data = files
    X = data.X.toarray() * 1.5  # not integers, not log scale (max far above log1p(4000) ~ 8.3)
    path = write_h5ad(type(data)(X, data.genes, data.condition, data.cell_line, data.batch), tmp_path / "raw.h5ad")
    with caplog.at_level("WARNING", logger="txpert_head.data.perturb_data"):
        load_h5ad(path, "gene", batch_col="rep")
    assert any("not log" in r.getMessage() and "--normalize counts" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------- 6. duplicate gene names
def test_duplicate_var_names_are_refused_naming_them(files, tmp_path):
    root, data = files
    genes = list(data.genes)
    genes[5] = genes[4]
    path = write_h5ad(data, tmp_path / "d.h5ad")
    adata = anndata.read_h5ad(path)
    adata.var_names = genes
    adata.write_h5ad(path)
    with pytest.raises(DataError, match=f"duplicate gene names.*{genes[4]}"):
        load_h5ad(path, "gene", batch_col="rep")
    res = _train(root, tmp_path / "run", data=path)
    _clean_error(res, "duplicate", genes[4])
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------- 7. option types
@pytest.mark.parametrize("args, key, shown, expected", [
    (["--set", "lr=abc"], "lr", "'abc'", "a number"),
    (["--set", "hidden=12.5"], "hidden", "12.5", "an integer"),
    (["--set", "target_term=1"], "target_term", "1", "true or false"),
    (["--set", "graph_hops=1.5"], "graph_hops", "1.5", "'auto'"),
    (["--set", "max_steps_per_epoch=[1]"], "max_steps_per_epoch", "[1]", "an integer or null"),
    (["--set", "encoder_kind=3"], "encoder_kind", "3", "a string"),
    (["--set", "lr=NaN"], "lr", "nan", "a finite number"),
    ("toml", "lr", "'fast'", "a number"),
    # sizes and devices that would fail deep inside torch
    (["--set", "hidden=-1"], "hidden", "-1", "an integer >= 1"),
    (["--set", "eval_cells=0"], "eval_cells", "0", "an integer >= 1"),
    (["--set", "device=foo"], "device", "'foo'", "'cpu'"),
])
def test_bad_option_types_are_clean_errors_before_anything_is_written(files, tmp_path, args, key, shown, expected):
    root, _ = files
    if args == "toml":
        (tmp_path / "t.toml").write_text('[train]\nlr = "fast"\nepochs = 1\n')
        args = ["--config", str(tmp_path / "t.toml")]
        res = _train(root, tmp_path / "run", *args, config=False)
    else:
        res = _train(root, tmp_path / "run", *args)
    _clean_error(res, key, shown, expected)
    assert not (tmp_path / "run").exists()


def test_option_types_from_annotations():
    cfg = TrainConfig(lr=1, self_mask=0, graph_hops="auto", max_steps_per_epoch=None, cells_per_group=None)
    assert cfg.lr == 1
    assert TrainConfig(graph_hops=None).hops is None and TrainConfig(graph_hops=2).hops == 2
    for bad in ({"epochs": True}, {"seed": 1.0}, {"progress": "yes"}, {"graph_hops": "all"}, {"self_mask": "x"}):
        with pytest.raises(ValueError, match=f"option {next(iter(bad))}"):
            TrainConfig(**bad)


def test_cuda_without_cuda_and_zero_epochs(files, tmp_path):
    root, _ = files
    if not torch.cuda.is_available():
        res = _train(root, tmp_path / "gpu", "--set", "device=cuda")
        _clean_error(res, "CUDA is not available", "device=cpu")
        assert not (tmp_path / "gpu").exists()
    for opt in ("epochs=0", "patience=0"):  # no training epoch: the untrained model is evaluated (empty curves)
        res = _train(root, tmp_path / opt, "--set", opt)
        assert res.exit_code == 0, res.output
        assert (tmp_path / opt / "plots" / "learning_curves.png").exists()


# ---------------------------------------------------------------------- 8. unwritable output
def test_output_under_a_regular_file_is_a_clean_error(files, finished, tmp_path):
    root, _ = files
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    res = _train(root, blocker / "run")
    _clean_error(res, "cannot write", str(blocker), "not a folder")
    res = CliRunner().invoke(main, ["baseline", "--data", str(root / "d.h5ad"), "--perturbation-col", "gene",
                                    "--batch-col", "rep", "--split-half-seeds", "0", "--no-vcc",
                                    "-o", str(blocker / "base")])
    _clean_error(res, "cannot write", str(blocker))
    res = CliRunner().invoke(main, ["predict", str(finished), "-p", "G3", "-o", str(blocker / "p.h5ad")])
    _clean_error(res, "cannot write", str(blocker))
    assert blocker.read_text() == "not a folder"


def test_a_full_disk_during_a_checkpoint_is_a_clean_error(files, tmp_path, monkeypatch):
    import errno

    import txpert_head.training.trainer as train_module

    def full(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(train_module, "atomic_torch_save", full)
    root, _ = files
    res = _train(root, tmp_path / "run")
    _clean_error(res, "No space left on device", str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # nothing of a run that never checkpointed is left


# ---------------------------------------------------------------------- 10. damaged checkpoints
def test_damaged_checkpoints_are_clean_errors_naming_the_file(files, finished, tmp_path):
    root, _ = files
    run = _copy_run(finished, tmp_path / "run")
    best = run / "checkpoints" / "best.pt"
    good = best.read_bytes()
    cases = {
        "junk": lambda: best.write_bytes(b"not a checkpoint at all"),
        "truncated": lambda: best.write_bytes(good[: len(good) // 2]),
        "empty": lambda: best.write_bytes(b""),
        "code": lambda: torch.save({"model": Path("x")}, best),  # refused by weights_only (UnpicklingError)
        "shapes": lambda: torch.save({"model": {k: torch.zeros(3) for k in torch.load(
            _copy_bytes(good, tmp_path / "g.pt"), weights_only=True)["model"]}, "epoch": 1}, best),
    }
    for name, damage in cases.items():
        damage()
        res = CliRunner().invoke(main, ["evaluate", str(run), "--no-baselines", "--no-vcc"])
        _clean_error(res, str(best))
        res = CliRunner().invoke(main, ["predict", str(run), "-p", "G3", "-o", str(tmp_path / "p.h5ad")])
        _clean_error(res, str(best))
        assert not (tmp_path / "p.h5ad").exists(), name
    best.write_bytes(good)
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(b"junk")
    before = _snapshot(run)
    res = _train(root, run)
    _clean_error(res, str(last), "--no-resume")
    assert _snapshot(run) == before


def _copy_bytes(data: bytes, path: Path) -> Path:
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------- found by the fuzz test
def test_split_half_is_skipped_when_a_test_condition_has_a_single_row():
    from txpert_head.evaluation.baselines import run_baselines
    from txpert_head.data.splits import make_split
    from txpert_head.simulate.fixtures import synthetic_data

    data = synthetic_data(n_cells=600, n_genes=30, n_perts=12, seed=2)
    split = make_split(data, "unseen_single", seed=0)
    rows = np.flatnonzero(data.condition == split.test[0][1])
    keep = np.ones(data.n_obs, dtype=bool)
    keep[rows[1:]] = False  # one cell left: not pseudobulk, but that condition cannot be split in two
    res = run_baselines(data.subset(np.flatnonzero(keep)), split, split_half_seeds=2)
    assert "split_half" not in res and "general" in res


def test_huge_counts_normalise_without_overflow_and_all_zero_data_is_refused(files, tmp_path):
    from txpert_head.data.perturb_data import normalize_counts
    import scipy.sparse as sp

    X = sp.csr_matrix(np.full((2, 30), 3e37, dtype=np.float32))  # row sums overflow float32
    out = normalize_counts(X, 4000).toarray()
    assert np.isfinite(out).all() and np.allclose(out, np.log1p(4000 / 30))
    root, data = files
    path = write_h5ad(type(data)(np.zeros(data.X.shape), data.genes, data.condition, data.cell_line, data.batch),
                      tmp_path / "zeros.h5ad")
    res = _train(root, tmp_path / "run", data=path)
    _clean_error(res, "every expression value is 0")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------- two trainers on one run folder
def test_a_second_train_on_a_busy_run_folder_is_refused(files, finished, tmp_path):
    root, _ = files
    run = _copy_run(finished, tmp_path / "run")
    before = _snapshot(run)
    with open(run / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another `txpert train` holds the folder
        res = _train(root, run)
        _clean_error(res, "in use by another", str(run))
        res = _train(root, tmp_path / "other")  # other folders are free
        assert res.exit_code == 0, res.output
    assert {k: v for k, v in _snapshot(run).items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"}
    res = _train(root, run)  # released: the same command resumes (finished: evaluates again)
    assert res.exit_code == 0, res.output
    assert not (run / ".lock").exists()
    (run / ".lock").write_text("999999\n")  # left by a killed run (unlocked): taken over
    res = _train(root, run)
    assert res.exit_code == 0, res.output
    assert not (run / ".lock").exists()


# ---------------------------------------------------------------------- bad data files
def _write(files, path: Path, labels, X=None, rep=None) -> Path:
    _, data = files
    X = data.X if X is None else X
    rep = data.batch if rep is None else rep
    obs = pd.DataFrame({"gene": labels, "rep": rep}, index=[f"c{i}" for i in range(len(labels))])
    anndata.AnnData(X, obs=obs, var=pd.DataFrame(index=data.genes)).write_h5ad(path)
    return path


def _bad_file(files, tmp_path, kind):
    root, data = files
    cond = data.condition.astype(object).copy()
    ctrl = cond == "ctrl"
    path = tmp_path / f"{kind}.h5ad"
    if kind == "nan_label":
        cond[7] = np.nan
        return _write(files, path, cond), ["'gene'", "c7"]
    if kind == "malformed_label":
        cond[7] = "G1 G2"
        return _write(files, path, cond), ["'G1 G2'", "gene symbol"]
    if kind == "empty_label":
        cond[7] = "+"
        return _write(files, path, cond), ["'+'"]
    if kind == "control_only":
        return _write(files, path, cond[ctrl], data.X[ctrl], data.batch[ctrl]), ["no perturbed cells"]
    if kind == "no_cells":
        return _write(files, path, cond[:0], data.X[:0], data.batch[:0]), ["no cells"]
    if kind == "missing_from_graph":
        return _write(files, path, np.array([c if c == "ctrl" else f"ZZ{c}" for c in cond], dtype=object)), [
            "no overlap"]
    if kind == "truncated":
        raw = (root / "d.h5ad").read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
        return path, ["cannot read as .h5ad"]
    if kind == "not_h5ad":
        path.write_text("gene,rep\nG1,a\n")
        return path, ["cannot read as .h5ad"]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["nan_label", "malformed_label", "empty_label", "control_only", "no_cells",
                                  "missing_from_graph", "truncated", "not_h5ad"])
def test_bad_data_files_are_clean_errors_without_a_run_folder(files, tmp_path, kind):
    root, _ = files
    path, fragments = _bad_file(files, tmp_path, kind)
    res = _train(root, tmp_path / "run", data=path)
    _clean_error(res, str(path) if kind != "missing_from_graph" else "g.kg.npz", *fragments)
    assert not (tmp_path / "run").exists()


def test_an_empty_double_split_is_a_clean_error(files, tmp_path):
    root, _ = files
    res = _train(root, tmp_path / "run", "--task", "double")
    _clean_error(res, "empty test split", "0 combination(s)")
    assert not (tmp_path / "run").exists()


def test_ctrl_inside_a_combination_is_the_single_gene(files, tmp_path):
    """GEARS-style labels: ``A+ctrl`` is the single perturbation A (documented), and trains."""
    root, data = files
    labels = np.array([c if c == "ctrl" else f"{c}+ctrl" for c in data.condition], dtype=object)
    path = _write(files, tmp_path / "gears.h5ad", labels)
    loaded = load_h5ad(path, "gene", batch_col="rep")
    assert sorted(set(loaded.condition)) == sorted(set(data.condition))
    res = _train(root, tmp_path / "run", data=path)
    assert res.exit_code == 0, res.output


# ---------------------------------------------------------------------- predict: genes the model does not know
def test_predict_refuses_unknown_genes_unless_allowed_and_marks_them(finished, tmp_path):
    out = tmp_path / "p.h5ad"
    res = CliRunner().invoke(main, ["predict", str(finished), "-p", "G3", "-p", "FOO1+G3", "-o", str(out)])
    _clean_error(res, "FOO1", "--allow-unknown")
    assert not out.exists()
    res = CliRunner().invoke(main, ["predict", str(finished), "-p", "G3", "-p", "FOO1", "-p", "G25", "-p", "FOO1+G3",
                                    "--allow-unknown", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "FOO1" in res.output and "unknown" in res.output.lower()
    pred = anndata.read_h5ad(out)
    assert pred.obs["known"].tolist() == [True, False, True, False]
    assert pred.obs["perturbation"].tolist() == ["G3", "FOO1", "G25", "FOO1+G3"]
