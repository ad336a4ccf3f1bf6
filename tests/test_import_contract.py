"""The import contract of the packages: data flows one way, sources -> graphs -> encoder -> model -> metrics,
so ``kgbuild`` (graphs) imports neither ``gnn`` nor ``txpert_head``, and ``gnn`` (the encoder) does not import
``txpert_head``. Every import statement counts, including those inside functions (lazy imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: package -> packages of this project it must not import (later stages of the flow)
FORBIDDEN = {"kgbuild": ("gnn", "txpert_head"), "gnn": ("txpert_head",)}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute import in a Python file (``import a.b`` and ``from a.b import c``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in sorted((REPO / package).rglob("*.py")):
        for line, module in imported_modules(path):
            if module.split(".")[0] in forbidden:
                out.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_earlier_stages(package):
    assert (REPO / package / "__init__.py").exists()
    assert violations(package, FORBIDDEN[package]) == []


def test_the_checker_sees_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef f():\n    from txpert_head.train import Trainer\n    import gnn.encoder as e\n")
    assert imported_modules(f) == [(1, "os"), (4, "txpert_head.train"), (5, "gnn.encoder")]
