"""docs/python-api.md works: its ```python blocks run, in order, in one namespace, in an empty folder."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[str]:
    return [m.group(1) for m in BLOCK.finditer(text)]


def test_the_page_has_code_blocks():
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 8 and "tx.train(" in "".join(blocks)


@pytest.mark.slow
def test_python_api_walkthrough_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # the `txpert` and `kgbuild` commands of this environment, as a notebook's would find them
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    namespace: dict = {"__name__": "__main__"}
    for k, block in enumerate(python_blocks(DOC.read_text(encoding="utf-8"))):
        try:
            exec(compile(block, f"{DOC.name} block {k + 1}", "exec"), namespace)
        except Exception as err:  # name the block that failed
            raise AssertionError(f"{DOC.name}: code block {k + 1} failed: {type(err).__name__}: {err}\n{block}") from err
    out = capsys.readouterr().out
    assert "TxPert Pearson delta" in out and "refused:" in out and "MRR" in out and "minus general" in out
    assert (tmp_path / "predictions.h5ad").exists() and (tmp_path / "runs" / "string" / "predictor").is_dir()
