"""Input files for the ``txpert`` command-line tests: a synthetic Perturb-seq ``.h5ad``, a graph and a
training options file, written the way a user would have them on disk (seeded, deterministic)."""

from __future__ import annotations

from pathlib import Path

import anndata
import numpy as np
import pandas as pd

from txpert_head.data.perturb_data import PerturbData
from txpert_head.simulate.fixtures import synthetic_data, synthetic_graph

# options every CLI test shares: a tiny model, no progress bars, the PyG backend (present in every env)
BASE_TRAIN_OPTIONS = {"batch_size": 64, "encoder_dim": 8, "hidden": 16, "progress": False, "encoder_backend": "pyg"}


def write_h5ad(data: PerturbData, path: Path, obs: dict[str, np.ndarray] | None = None) -> Path:
    """``data`` as an AnnData file with obs columns ``gene`` (perturbation) and ``rep`` (batch), or ``obs``."""
    obs = {"gene": data.condition, "rep": data.batch} if obs is None else obs
    frame = pd.DataFrame(obs, index=[f"c{i}" for i in range(data.n_obs)])
    anndata.AnnData(data.X, obs=frame, var=pd.DataFrame(index=data.genes)).write_h5ad(path)
    return path


def toml_text(options: dict) -> str:
    """A ``[train]`` table of scalar options (strings quoted, booleans lower-case)."""
    def value(v):
        if isinstance(v, bool):
            return str(v).lower()
        return f'"{v}"' if isinstance(v, str) else repr(v)

    return "[train]\n" + "".join(f"{k} = {value(v)}\n" for k, v in options.items())


def write_cli_inputs(root: Path, *, n_cells: int = 900, n_doubles: int = 0, graph_genes: int = 30, seed: int = 2,
                     **train_options) -> PerturbData:
    """Write ``root/d.h5ad`` (raw counts, 30 genes, 12 perturbations), ``root/g.kg.npz`` and ``root/train.toml``
    (:data:`BASE_TRAIN_OPTIONS` updated with ``train_options``); returns the data written."""
    d = synthetic_data(n_cells=n_cells, n_genes=30, n_perts=12, n_doubles=n_doubles, seed=seed, normalize=False)
    write_h5ad(d, root / "d.h5ad")
    synthetic_graph(graph_genes, seed=seed).save(root / "g.kg.npz")
    (root / "train.toml").write_text(toml_text({**BASE_TRAIN_OPTIONS, **train_options}))
    return d
