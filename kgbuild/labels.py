"""Names the field uses in Perturb-seq AnnData ``obs``: perturbation, control, batch and cell-line columns.

One definition, used by ``kgbuild screen`` (``.h5ad`` input), by ``txpert``'s column detection
(:func:`txpert_head.data.perturb_data.detect_columns`) and by ``txpert demo``. Names are compared case-insensitively.
"""

from __future__ import annotations

#: obs columns that hold the perturbation, most usual first (scPerturb / PerturBench: ``perturbation`` and
#: ``condition``; GEARS: ``condition``; Papalexi / Mixscape: ``target`` or ``gene``)
PERTURBATION_COLUMNS: tuple[str, ...] = (
    "perturbation", "condition", "target", "gene", "perturbation_name", "perturbed_gene", "perturbed_genes",
    "guide_target", "gene_target", "target_gene", "target_genes", "perturbation_target",
)
#: labels of control cells (GEARS writes ``ctrl``, also inside ``A+ctrl``: the single perturbation ``A``)
CONTROL_LABELS: tuple[str, ...] = (
    "ctrl", "control", "non-targeting", "non_targeting", "nontargeting", "NT", "NTC", "safe-targeting",
)
#: obs columns that hold the batch (10x GEM group, biological replicate, library)
BATCH_COLUMNS: tuple[str, ...] = ("batch", "gem_group", "bio_rep", "replicate", "rep", "library", "lane")
#: obs columns that hold the cell line
CELL_LINE_COLUMNS: tuple[str, ...] = ("cell_line", "cell_type", "cell_line_name")


def is_control_label(label: object) -> bool:
    """Whether ``label`` is one of :data:`CONTROL_LABELS` (ignoring case and surrounding spaces)."""
    return str(label).strip().lower() in _CONTROL_LOWER


_CONTROL_LOWER = frozenset(c.lower() for c in CONTROL_LABELS)
