"""Stage 5, evaluation: the training-free baselines and the VCC block, computed on a split.

* :mod:`.baselines` -- general, additive, nearest cell line, ``graph_neighbours``, linear and linear-graph;
* :mod:`.vcc` -- the Virtual Cell Challenge block of a model and of the baselines.
"""
