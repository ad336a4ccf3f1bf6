"""The import contract of the packages: data flows one way.

Between packages: sources -> graphs -> encoder -> model -> metrics, so ``kgbuild`` (graphs) imports neither
``gnn`` nor ``txpert_head``, and ``gnn`` (the encoder) does not import ``txpert_head``.

Inside ``txpert_head``, the sub-packages are stages (``txpert_head.STAGES``, lowest first)::

    data < simulate < metrics < model < training < evaluation < identification < reporting < runs < api, cli

A module of a stage imports only modules of its own stage or of earlier ones. Every import statement counts,
including those inside functions (lazy imports) and under ``TYPE_CHECKING``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: package -> packages of this project it must not import (later stages of the flow)
FORBIDDEN = {"kgbuild": ("gnn", "txpert_head"), "gnn": ("txpert_head",)}
#: txpert_head's stages, lowest first; api and cli share the top
STAGES = ("data", "simulate", "metrics", "model", "training", "evaluation", "identification", "reporting", "runs",
          "api", "cli")
LEVEL = {stage: i for i, stage in enumerate(STAGES)} | {"cli": STAGES.index("api")}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute import in a Python file (``import a.b`` and ``from a.b import c``;
    ``from a import b`` counts as ``a.b``, as ``b`` may be a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "txpert_head":
                found += [(node.lineno, f"txpert_head.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in sorted((REPO / package).rglob("*.py")):
        for line, module in imported_modules(path):
            if module.split(".")[0] in forbidden:
                out.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return out


def stage_of(parts: tuple[str, ...]) -> str | None:
    """The stage of ``txpert_head.<parts>`` (a module path below the package), None for the package itself."""
    if not parts or parts[0] in ("__init__", "__init__.py"):
        return None
    name = parts[0].removesuffix(".py")
    if name not in LEVEL:
        raise AssertionError(f"txpert_head/{'/'.join(parts)} belongs to no stage: add it to a sub-package of "
                             f"{STAGES}")
    return name


def stage_violations(root: Path) -> list[str]:
    """Imports of a later stage inside ``root`` (a txpert_head package folder)."""
    out = []
    for path in sorted(root.rglob("*.py")):
        own = stage_of(path.relative_to(root).parts)
        if own is None:
            continue
        for line, module in imported_modules(path):
            head, *rest = module.split(".")
            if head != "txpert_head" or not rest:
                continue
            other = stage_of(tuple(rest))
            if other is not None and LEVEL[other] > LEVEL[own]:
                out.append(f"{path.relative_to(root.parent)}:{line} ({own}) imports {module} ({other})")
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_earlier_stages(package):
    assert (REPO / package / "__init__.py").exists()
    assert violations(package, FORBIDDEN[package]) == []


def test_txpert_head_stages_import_only_earlier_stages():
    import txpert_head

    assert txpert_head.STAGES == STAGES  # the package states the same order
    assert stage_violations(REPO / "txpert_head") == []


def test_every_stage_is_a_package_and_nothing_sits_beside_them():
    root = REPO / "txpert_head"
    loose = sorted(p.name for p in root.glob("*.py") if p.stem not in ("__init__", "api"))
    assert loose == []
    for stage in STAGES:
        if stage != "api":
            assert (root / stage / "__init__.py").exists(), stage


def test_the_checker_sees_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef f():\n    from txpert_head.training.trainer import Trainer\n"
                 "    import gnn.encoder as e\n    from txpert_head import runs\n")
    assert imported_modules(f) == [(1, "os"), (4, "txpert_head.training.trainer"), (5, "gnn.encoder"),
                                   (6, "txpert_head.runs")]


def test_the_checker_finds_a_backward_import(tmp_path):
    pkg = tmp_path / "txpert_head"
    (pkg / "data").mkdir(parents=True)
    (pkg / "model").mkdir()
    (pkg / "data" / "x.py").write_text("def f():\n    from txpert_head.model.txpert import TxPert\n")
    (pkg / "model" / "y.py").write_text("from txpert_head.data.x import f\n")
    assert stage_violations(pkg) == ["txpert_head/data/x.py:2 (data) imports txpert_head.model.txpert (model)"]
