"""The ``txpert`` command line: train, evaluate and apply TxPert models.

Also runnable as ``python -m txpert_head.cli.main`` (and so under ``torchrun``).
"""

from __future__ import annotations

import click

from kgbuild.cli_common import common_group_options, set_short_help, setup_logging
from txpert_head.training.allocator import keep_freed_memory


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@common_group_options("txpert")
def main(verbose: int) -> None:
    """Train and evaluate TxPert: predict the transcriptional response of cells to genetic
    perturbations never seen in training, from gene-gene knowledge graphs built with kgbuild.
    """
    setup_logging(verbose)
    keep_freed_memory()  # large tensors' pages are reused, not faulted in again at every step


from txpert_head.cli.simulate import simulate  # noqa: E402  (txpert simulate)

main.add_command(simulate)

from txpert_head.cli.commands import COMMANDS as _TRAIN_COMMANDS  # noqa: E402  (train, evaluate, predict, baseline)

for _command in _TRAIN_COMMANDS:
    main.add_command(_command)

set_short_help(main, {
    "baseline": "Baselines on a split (no training).",
    "evaluate": "Evaluate a trained run on its test split.",
    "identify": "Which gene was perturbed? Rank candidate genes.",
    "predict": "Predict mean expression with a trained run.",
    "score": "Score any model's predictions (metrics, baselines).",
    "simulate": "Write a simulated example (graph sources, screen).",
    "train": "Train TxPert on a Perturb-seq file and a graph.",
})


if __name__ == "__main__":  # pragma: no cover
    main()
