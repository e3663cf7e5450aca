"""Shared test fixtures: the official parity fixtures, quiet TensorFlow, test markers."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("DYNZOO_FIXTURES", REPO.parent / "shared" / "fixtures" / "official"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long test (CI runs it too)")
    # Caches (converted checkpoints, downloads) go to a private folder per test process, never to the
    # user's, and parallel workers do not share one.
    os.environ["DYNZOO_HOME"] = tempfile.mkdtemp(prefix="dynzoo_home_")


# The longest test files (seconds on 2 cores, from `pytest --durations`), longest first. With
# `--dist loadfile --no-loadscope-reorder` (the README's command) xdist hands files to its workers in
# collection order, so the long ones start first and the many short files fill in behind them instead of
# one long file running alone at the end.
LONGEST_FILES = ("test_train.py", "test_drnet_models.py", "test_export.py", "test_quickstart.py",
                 "test_dcd_models.py", "test_ddn_models.py", "test_micronet_models.py", "test_ddw_models.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """``../shared/fixtures/official``. Missing fixtures skip the parity tests locally but fail CI."""
    if not (FIXTURES / "micronet_m0.pth").exists():
        message = f"official parity fixtures not found at {FIXTURES} (set DYNZOO_FIXTURES)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return FIXTURES


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """``dynzoo quickstart`` run once in a fresh process: (the finished process, its bundles folder, its
    training folder). Its trained MicroNet-M0 (``run/model.keras``, 32×32 digits) also serves the int16x8
    accuracy test; both users live in test_quickstart.py, so one xdist worker builds it (README, "Tests")."""
    root = tmp_path_factory.mktemp("quickstart")
    out, run_dir = root / "bundles", root / "run"
    done = subprocess.run(
        [sys.executable, "-m", "dynzoo.cli", "quickstart", "--out", str(out), "--run_dir", str(run_dir)],
        cwd=root, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return done, out, run_dir


@pytest.fixture(scope="session")
def trained_dcd(tmp_path_factory):
    """DCD-MobileNetV2 ×0.5 trained by ``dynzoo.train`` on the 32×32 digits (6 epochs at lr 0.02: the
    digits recipe's 0.1 barely moves it), once for the training and the int16x8 accuracy tests (both in
    test_train.py, so one xdist worker builds it)."""
    from dynzoo.train import TrainConfig, train

    run_dir = tmp_path_factory.mktemp("dcd_run")
    return train(TrainConfig(model="dcd_mobilenetv2_050", dataset="digits", model_dir=str(run_dir),
                             overrides={"epochs": 6, "lr": 0.02, "input_size": 32}, validation_freq=0, verbose=0))
