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
    config.addinivalue_line("markers", "backends: the JAX and PyTorch backend matrix (skipped without those packages)")
    config.addinivalue_line("markers", "onnx: ONNX export of the registry (skipped without tf2onnx and onnxruntime)")
    # Caches (converted checkpoints, downloads) go to a private folder per test process, never to the
    # user's, and parallel workers do not share one.
    os.environ["DYNZOO_HOME"] = tempfile.mkdtemp(prefix="dynzoo_home_")
    # With one xdist worker per core, each worker's TensorFlow (and the commands it starts) computes an op
    # on one thread: two threads per worker would only contend for the cores. Inter-op threads stay as
    # they are (MirroredStrategy's replicas run concurrently).
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    # No test may depend on training luck: TensorFlow's deterministic kernels everywhere (CPU reductions
    # and data pipelines run in a fixed order), and every test starts from the same seeds (below).
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


@pytest.fixture(autouse=True)
def fixed_seeds():
    """Python's, NumPy's, TensorFlow's and Keras's seeds reset before every test, so that what a test
    draws does not depend on which tests its worker ran before it (xdist hands out whole files)."""
    import keras

    keras.utils.set_random_seed(0)


# The longest test files (seconds on 2 cores, from `pytest --durations`), longest first. With
# `--dist loadfile --no-loadscope-reorder` (the README's command) xdist hands files to its workers in
# collection order, so the long ones start first and the many short files fill in behind them instead of
# one long file running alone at the end.
LONGEST_FILES = (
    "test_keras_files.py",
    "test_drnet_models.py",
    "test_quickstart.py",
    "test_train.py",
    "test_checkpoint_fuzz.py",
    "test_dcd_models.py",
    "test_export.py",
    "test_micronet_models.py",
    "test_ddn_models.py",
    "test_ddw_models.py",
    "test_cdb_models.py",
    "test_package.py",
    "test_drt.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise


def skip_or_fail_under_ci(message: str) -> None:
    """Skip the test for a missing prerequisite locally; under CI (``CI`` set), where .ci/run installs
    every prerequisite, fail it instead, so that a broken install step cannot pass as a skip."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """``../shared/fixtures/official``. Missing fixtures skip the parity tests locally but fail CI."""
    if not (FIXTURES / "micronet_m0.pth").exists():
        skip_or_fail_under_ci(f"official parity fixtures not found at {FIXTURES} (set DYNZOO_FIXTURES)")
    return FIXTURES


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """``dynzoo quickstart`` run once as a user runs it, the installed command without arguments in an
    empty folder and with TensorFlow's log settings untouched: (the finished process, its bundles folder,
    its training folder). Its trained MicroNet-M0 (``runs/quickstart/model.keras``, 32×32 digits) also
    serves the int16x8 accuracy test; both users live in test_quickstart.py, so one xdist worker builds it
    (README, "Tests")."""
    root = tmp_path_factory.mktemp("quickstart")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "DYNZOO_VERBOSE")}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dynzoo")), "quickstart"],
        cwd=root,
        env=env,
        capture_output=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return done, root / "bundles", root / "runs" / "quickstart"
