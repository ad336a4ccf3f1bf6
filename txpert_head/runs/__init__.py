"""Stage 8, run folders: what ``txpert train / evaluate / predict / baseline / identify / score`` read and
write, in Python.

* :mod:`.folder` -- data options, config files, the run folder, ``train_run``, ``evaluate_run``,
  ``baseline_run``;
* :mod:`.predictor` -- :class:`~txpert_head.runs.predictor.Predictor`: a finished run, loaded without its
  training data;
* :mod:`.cell_output` -- predicted cells written as AnnData (``predict --cells``);
* :mod:`.scoring` -- any model's predictions scored like TxPert's (``txpert score``);
* :mod:`.identify` -- ``txpert identify`` on a run folder.
"""
