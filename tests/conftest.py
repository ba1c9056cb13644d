from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "agg")
_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
os.environ.setdefault("STALIGN_DATA_DIR", str(_DEFAULT))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real shared data; CI always has it, so its absence fails there and skips elsewhere."""
    path = Path(os.environ["STALIGN_DATA_DIR"])
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"STALIGN_DATA_DIR={path} does not exist in CI")
        pytest.skip(f"real data not found at {path}")
    return path
