"""Pieces shared by the ``kgbuild`` and ``txpert`` command lines: verbosity and error reporting."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import click

from kgbuild._version import __version__


def setup_logging(verbose: int) -> None:
    """``-v`` shows progress messages (INFO), ``-vv`` everything (DEBUG); default: warnings only."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)


def common_group_options(prog: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--version`` and ``-v/--verbose`` for a top-level click group."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = click.option(
            "-v", "--verbose", count=True, help="More log output: -v progress, -vv debug."
        )(fn)
        fn = click.version_option(__version__, "--version", prog_name=prog, message="%(prog)s %(version)s")(fn)
        return fn

    return decorate


def set_short_help(group: click.Group, texts: dict[str, str]) -> None:
    """Give each command of ``group`` its one-line summary for ``--help``'s command list.

    Click otherwise cuts the first sentence of the docstring at the terminal width and ends it with
    "...", which reads as broken output.
    """
    missing = sorted(set(group.commands) - set(texts))
    if missing:
        raise KeyError(f"no short help for command(s): {', '.join(missing)}")
    for name, text in texts.items():
        group.commands[name].short_help = text


def user_errors(*kinds: type[BaseException],
                message: Callable[[BaseException], str] = str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turn the listed exception types into a clean ``Error: ...`` message (``message(err)``, default the
    exception's text) and exit code 1 (no traceback)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except kinds as err:
                raise click.ClickException(message(err)) from err

        return wrapper

    return decorate
