"""Shared test fixtures: the official parity fixtures, quiet TensorFlow, test markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("DYNZOO_FIXTURES", REPO.parent / "shared" / "fixtures" / "official"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long test (CI runs it too)")


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """``../shared/fixtures/official``. Missing fixtures skip the parity tests locally but fail CI."""
    if not (FIXTURES / "micronet_m0.pth").exists():
        message = f"official parity fixtures not found at {FIXTURES} (set DYNZOO_FIXTURES)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return FIXTURES
