"""The error for bad user input to the graph builders: it names the file, line, column or gene at fault."""

from __future__ import annotations

import os


class KgbuildInputError(ValueError):
    """Bad input (a malformed line, a missing column, a bad value, an empty result, ...).

    The message starts with whatever locates the problem: ``"<file>, line <n>, column '<c>': <problem>"``.
    The command line turns it into ``Error: <message>`` with exit code 1 and writes nothing.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | os.PathLike | None = None,
        line: int | None = None,
        column: str | None = None,
        gene: str | None = None,
    ):
        self.problem = problem
        self.path = str(path) if path is not None else None
        self.line = line
        self.column = column
        self.gene = gene
        where = []
        if self.path is not None:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column!r}")
        if gene is not None:
            where.append(f"gene {gene!r}")
        super().__init__(f"{', '.join(where)}: {problem}" if where else problem)
