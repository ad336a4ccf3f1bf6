"""Stage 4, training: options, losses, checkpoints, the training loop and the prediction code it shares with
a loaded run.

* :mod:`.config` -- :class:`~txpert_head.training.config.TrainConfig`, every option of a run;
* :mod:`.losses` -- MSE and the distributional terms (MMD, sliced Wasserstein);
* :mod:`.checkpoints` -- atomic writes and safe reads of checkpoints;
* :mod:`.distributed` -- data parallel (``torchrun``);
* :mod:`.allocator` -- keeping freed memory in the process (glibc's malloc thresholds), set by every entry point;
* :mod:`.prediction` -- building the model and predicting from it (shared by the trainer and the predictor);
* :mod:`.trainer` -- :class:`~txpert_head.training.trainer.Trainer`: batches, steps, validation, early
  stopping, resume.
"""
