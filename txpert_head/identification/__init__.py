"""Stage 6, target identification (the reverse task): rank candidate genes for groups of perturbed cells.

* :mod:`.targets` -- the ranking (:func:`~txpert_head.identification.targets.identify`) and its evaluation;
* :mod:`.baselines` -- training-free rankings to compare with.
"""
