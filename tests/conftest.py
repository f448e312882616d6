"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Folder of real third-party test data ($STREAMPARSE_REAL_DATA, default <repo>/../shared/data/real)."""
    path = Path(os.environ.get("STREAMPARSE_REAL_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"))
    if not path.is_dir():
        pytest.skip(f"real data folder absent: {path}")
    return path
