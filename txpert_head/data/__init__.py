"""Stage 1, data: Perturb-seq files read into :class:`~txpert_head.data.perturb_data.PerturbData`, control
matching, splits and per-condition profiles. Imports nothing else of txpert_head.

* :mod:`.perturb_data` -- reading ``.h5ad`` (columns detected, counts normalised), ``PerturbData``, labels;
* :mod:`.controls` -- batch-matched control means and cells (``ControlIndex``);
* :mod:`.splits` -- unseen-single, double and cross-cell-line splits (``Split``, ``Condition``);
* :mod:`.profiles` -- true mean profiles and changes per condition, retrieval candidates.
"""
