"""Shared fixtures: where the real data lives (../shared/data beside the repository)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$TXPERT_SHARED_DATA`` or ``../shared/data`` beside the repository."""
    env = os.environ.get("TXPERT_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder; missing data fails under CI and skips elsewhere."""
    path = shared_data_dir()
    if not (path / "README.md").exists():
        if os.environ.get("CI"):
            pytest.fail(f"real data folder {path} is missing under CI")
        pytest.skip(f"real data folder {path} not found")
    return path
