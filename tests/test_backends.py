"""The backend matrix: dynzoo's models on Keras' JAX and PyTorch backends (export stays on TensorFlow).

Keras picks its backend once per process, so each backend runs ``tests/backend_check.py`` in a process of
its own. One model per family is built and run forward with TensorFlow's weights (same logits), trained
one SGD step (the same weights move as on TensorFlow) and round-tripped through a ``.keras`` file; the
families with official checkpoints (MicroNet, DCD) load them and reproduce the authors' PyTorch logits.

Not part of the CI command: JAX compiles every operation (about 70 s for MicroNet-M0 alone here), which
the 15-minute budget cannot hold. Run it with ``pip install ".[backends]"`` and
``pytest -m backends tests/test_backends.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES  # noqa: E402  (tests/ is on sys.path, as for official_parity)

HERE = Path(__file__).resolve().parent

# model[:official fixture]: one model per family, small ones
FAMILIES = {
    "micronet": "micronet_m0:micronet_m0",
    "mobilenetv2 (DCD)": "dcd_mobilenetv2_050:mobilenetv2_dcd_w0.5",
    "resnet (DCD)": "dcd_resnet18:resnet18_dcd",
    "cdb": "cdb_resnet10_cifar",
    "ddw": "ddw_resnet18_cifar",
    "drnet": "drnet_s",
    "drt": "drt_lenet",
    "ddn": "ddn_mobilenetv2_035_2x",
}
BACKENDS = {"jax": "jax", "torch": "torch"}  # backend → the package it needs


def run_backend(backend: str, reference: Path, out: Path) -> dict[str, dict]:
    """``backend_check.py`` over FAMILIES in a process on ``backend``: model name → its results."""
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(HERE)}
    done = subprocess.run(
        [sys.executable, str(HERE / "backend_check.py"), str(FIXTURES), str(reference), str(out), *FAMILIES.values()],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = {
        r["model"]: r for r in map(json.loads, filter(lambda line: line.startswith("{"), done.stdout.splitlines()))
    }
    assert list(results) == [spec.partition(":")[0] for spec in FAMILIES.values()], done.stderr[-3000:]
    return results


@pytest.fixture(scope="module")
def tensorflow_run(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    reference = tmp_path_factory.mktemp("reference")
    return reference, run_backend("tensorflow", reference, tmp_path_factory.mktemp("tensorflow"))


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.parametrize(
    "backend",
    [
        pytest.param(
            backend,
            marks=pytest.mark.skipif(
                importlib.util.find_spec(package) is None,
                reason=f"{package} is not installed (pip install '.[backends]')",
            ),
        )
        for backend, package in sorted(BACKENDS.items())
    ],
)
def test_every_family_runs_trains_and_saves_on_the_backend(backend, tensorflow_run, tmp_path):
    reference, expected = tensorflow_run
    for name, result in run_backend(backend, reference, tmp_path).items():
        assert result["backend"] == backend and "error" not in result, result
        assert "error" not in expected[name], expected[name]
        # TensorFlow's weights give TensorFlow's logits (to 1e-4 of the largest)
        assert result["forward_finite"] and result["tensorflow_error"] <= 1e-4, result
        # one step trains: dropout and sampled routing draw differently per backend, so the weights that
        # move differ by a few (a dead unit, an unsampled branch) from TensorFlow's count
        assert np.isfinite(result["train_loss"]), result
        assert result["weights_moved"] >= 0.9 * expected[name]["weights_moved"] > 0, result
        assert result["keras_round_trip"], result
        if "parity_error" in result:  # within 1e-4 relative of the authors' PyTorch logits
            assert result["parity_error"] <= 1.0 and expected[name]["parity_error"] <= 1.0, result
