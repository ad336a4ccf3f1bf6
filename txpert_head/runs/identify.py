"""``txpert identify`` on a run folder: load the run's predictor (no training data read), read the query file,
rank the candidates (:func:`txpert_head.identification.targets.identify`) and write the ranked table and its
summary."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from txpert_head.identification.targets import evaluate_labels, identify, read_candidates, summary_path, write_table


def identify_run(run_dir: str | Path, data_opts, out: str | Path, groups: Sequence[str] | None = None,
                 candidates_file: str | Path | None = None, score: str = "pearson", scope: str = "graph",
                 top: int | None = None, control_cells: int = 16, evaluate: bool = False,
                 progress: bool = True, center: bool = False) -> dict:
    """``txpert identify``: load the run's best weights and the query file, rank candidates, write the
    ranked table (``out``) and ``<out stem>.summary.json``; returns the summary."""
    from txpert_head.runs.predictor import Predictor, read_run_config
    from txpert_head.runs.folder import write_json

    run_dir = Path(run_dir)
    read_run_config(run_dir)  # before the query file is read
    if top is not None and top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    query = data_opts.load()
    wanted = read_candidates(candidates_file) if candidates_file else None
    # the run's predictor bundle (no training data read; the whole graph from its recorded path, sha256-checked)
    trainer = Predictor.load(run_dir)
    result = identify(trainer, query, groups, wanted, score, scope, control_cells,
                      seed=trainer.cfg.seed, progress=progress, center=center)
    table = result.table(top)
    shown = 10 if top is None else min(10, top)
    summary = {
        "run": str(run_dir), "data": str(data_opts.path), "score": score, "scope": scope, "center": center,
        "n_candidates": len(result.genes), "candidates_file": None if candidates_file is None else str(candidates_file),
        "unknown_candidates": result.unknown_candidates, "control_inputs": result.queries.notes,
        "table": str(out), "rows_per_group": int(len(table) // max(len(result.queries.names), 1)),
        "groups": [{"group": name, "cells": int(result.queries.n_rows[q]),
                    "top": [[result.genes[i], float(result.scores[q, i])] for i in result.order[q, :shown]]}
                   for q, name in enumerate(result.queries.names)],
    }
    if evaluate:
        summary["evaluation"] = evaluate_labels(result)
    write_table(table, out)
    write_json(summary, summary_path(out))
    return summary
