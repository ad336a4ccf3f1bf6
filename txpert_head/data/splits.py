"""Train / validation / test splits over conditions (cell line x perturbation), seeded.

Tasks:

* ``unseen_single``: single-gene perturbations are split by perturbation 0.5625 / 0.1875 / 0.25; a
  perturbation is in one part for every cell line. Combinations are left out.
* ``double``: every single is in training; combinations are split 0.5625 / 0.1875 / 0.25 and the test
  combinations fall into subgroups ``seen0/seen1/seen2`` by how many constituents were seen as training
  singles.
* ``cross_cell_line``: every perturbation of one held-out cell line is test (its controls stay in
  training, as inputs); the other lines' perturbations are split 0.75 / 0.25 into train / validation.

Controls are never split: they are the model's inputs and the metric's references in every part.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from txpert_head.data.perturb_data import CONTROL, PerturbData, constituents

TASKS = ("unseen_single", "double", "cross_cell_line")
FRACTIONS = (0.5625, 0.1875, 0.25)


class SplitError(ValueError):
    """A split that cannot be made (e.g. an empty test set): says which task and what the data holds."""


Condition = tuple[str, str]  # (cell line, perturbation)


@dataclass
class Split:
    """Condition lists per part; ``subgroups`` maps a subgroup name to test conditions."""

    task: str
    train: list[Condition]
    val: list[Condition]
    test: list[Condition]
    subgroups: dict[str, list[Condition]] = field(default_factory=dict)
    seed: int = 0

    def to_json(self) -> dict:
        enc = lambda xs: [f"{l}|{p}" for l, p in xs]  # noqa: E731
        return {"task": self.task, "seed": self.seed, "train": enc(self.train), "val": enc(self.val),
                "test": enc(self.test), "subgroups": {k: enc(v) for k, v in self.subgroups.items()}}

    @classmethod
    def from_json(cls, obj: dict) -> "Split":
        dec = lambda xs: [tuple(x.split("|", 1)) for x in xs]  # noqa: E731
        return cls(obj["task"], dec(obj["train"]), dec(obj["val"]), dec(obj["test"]),
                   {k: dec(v) for k, v in obj.get("subgroups", {}).items()}, obj.get("seed", 0))


def _partition(items: list[str], seed: int, fractions=FRACTIONS) -> tuple[list[str], list[str], list[str]]:
    """Shuffle sorted ``items`` with ``seed``; test gets round(n * f_test), val round(n * f_val)."""
    items = sorted(items)
    order = np.random.default_rng(seed).permutation(len(items))
    n = len(items)
    n_test = int(round(n * fractions[2]))
    n_val = int(round(n * fractions[1]))
    if n >= 3:
        n_test, n_val = max(n_test, 1), max(n_val, 1)
    shuffled = [items[i] for i in order]
    test = shuffled[:n_test]
    val = shuffled[n_test:n_test + n_val]
    train = shuffled[n_test + n_val:]
    return sorted(train), sorted(val), sorted(test)


def conditions_by_line(data: PerturbData) -> dict[str, list[str]]:
    """Cell line -> its non-control conditions (sorted)."""
    out: dict[str, set[str]] = {}
    for line, cond in set(zip(data.cell_line.tolist(), data.condition.tolist())):
        if cond != CONTROL:
            out.setdefault(line, set()).add(cond)
    return {k: sorted(v) for k, v in sorted(out.items())}


def make_split(data: PerturbData, task: str, seed: int = 0, holdout_line: str | None = None) -> Split:
    """Build the split for ``task`` (see the module docstring)."""
    if task not in TASKS:
        raise SplitError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    by_line = conditions_by_line(data)
    pairs = [(l, p) for l, ps in by_line.items() for p in ps]
    singles = sorted({p for _, p in pairs if len(constituents(p)) == 1})
    doubles = sorted({p for _, p in pairs if len(constituents(p)) > 1})
    subgroups: dict[str, list[Condition]] = {}
    if task == "unseen_single":
        tr, va, te = _partition(singles, seed)
        part = {**{p: "train" for p in tr}, **{p: "val" for p in va}, **{p: "test" for p in te}}
        split = Split(task, *[[c for c in pairs if part.get(c[1]) == name] for name in ("train", "val", "test")],
                      seed=seed)
        what = f"{len(singles)} single perturbation(s)"
    elif task == "double":
        tr, va, te = _partition(doubles, seed)
        part = {**{p: "train" for p in tr + singles}, **{p: "val" for p in va}, **{p: "test" for p in te}}
        split = Split(task, *[[c for c in pairs if part.get(c[1]) == name] for name in ("train", "val", "test")],
                      seed=seed)
        seen = {(l, p) for l, p in split.train if len(constituents(p)) == 1}
        for line, p in split.test:
            k = sum((line, g) in seen for g in constituents(p))
            subgroups.setdefault(f"seen{k}", []).append((line, p))
        what = f"{len(doubles)} combination(s)"
    else:
        lines = sorted(by_line)
        if holdout_line is None:
            raise SplitError(f"cross_cell_line needs a held-out cell line; cell lines: {', '.join(lines)}")
        if holdout_line not in by_line:
            raise SplitError(f"cell line {holdout_line!r} has no perturbations; cell lines: {', '.join(lines)}")
        if len(lines) < 2:
            raise SplitError("cross_cell_line needs at least two cell lines with perturbations")
        rest = [p for p in sorted({p for l, p in pairs if l != holdout_line})]
        tr, va, _ = _partition(rest, seed, fractions=(0.75, 0.25, 0.0))
        test = [(holdout_line, p) for p in by_line[holdout_line]]
        split = Split(task, [c for c in pairs if c[0] != holdout_line and c[1] in set(tr)],
                      [c for c in pairs if c[0] != holdout_line and c[1] in set(va)], test, seed=seed)
        what = f"{len(test)} perturbation(s) in cell line {holdout_line!r}"
    if not split.test:
        raise SplitError(
            f"empty test split: task {task!r} with seed {seed} on {data.source} has {what} "
            f"({len(singles)} single(s), {len(doubles)} combination(s) in total)"
        )
    if not split.train:
        raise SplitError(f"empty training split: task {task!r} on {data.source} has {what}")
    split.subgroups = subgroups
    return split
