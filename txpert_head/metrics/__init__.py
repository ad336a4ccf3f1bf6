"""Stage 2, metrics: the formulas, on arrays only (numpy / scipy; nothing else of txpert_head). Training uses
them for model selection, evaluation and reporting for scores.

* :mod:`.expression` -- Pearson Δ (against controls and against the mean perturbed profile), retrieval,
  centroid accuracy, MSE, rank; :func:`~txpert_head.metrics.expression.evaluate` computes the table;
* :mod:`.vcc` -- the Virtual Cell Challenge's DES, PDS, MAE and overall score (as cell-eval 0.8.2);
* :mod:`.identification` -- ranks, MRR and hits@k of target identification, and their random expectation;
* :mod:`.paired` -- paired comparisons: sign-flip test and its inverted interval.
"""
