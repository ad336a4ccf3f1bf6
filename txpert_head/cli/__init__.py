"""Stage 9, the command line: ``txpert`` (:mod:`.main`, with the subcommands of :mod:`.commands` and
:mod:`.simulate`) and the end-to-end demo (``python -m txpert_head.cli.demo``). Thin layers over the Python
API (:mod:`txpert_head.api`)."""
