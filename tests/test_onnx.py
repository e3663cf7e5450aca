"""ONNX through Keras' own exporter, ``model.export(path, format="onnx")`` (tf2onnx on TensorFlow), for every
registered model, run in onnxruntime against Keras.

Not part of the CI command: tf2onnx converts one model in 2–115 s here (MicroNet-M0 14 s, CDB-ResNet-101
115 s), about 35 minutes for the registry, which the 15-minute budget cannot hold. Measured: 51 of the 53
models within 1e-4; CDB-ResNet-101 and DRT-ResNet-101 at 1.1e-4 and 1.03e-4 of their largest logit (two
of 2000 logits each, float32 round-off over 101 layers). Run it with
``pip install ".[onnx]"`` and ``pytest -m onnx tests/test_onnx.py``.

The models train and predict in their compute form (``dynzoo.layers.base.export_form``), which has no
grouped convolution: Keras' TensorFlow backend compiles each of those in a nested XLA function, which
tf2onnx wrote as a ``PartitionedCall`` that onnxruntime refused (every MicroNet, before that form). CDB
and DRNet are built with ``conditional=False`` (every group or branch computed and masked, the same
outputs): their conditional form puts each group in a ``cond``, and tf2onnx writes a convolution inside
a ``cond`` branch with a 4-element ``dilations`` attribute, which onnxruntime refuses ("Attribute
dilations has incorrect size"). Each model's BatchNorm statistics are calibrated first, so that its
logits depend on its input and float32 round-off does not dominate them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io

import keras
import numpy as np
import pytest

import dynzoo
from dynzoo._compat import all_layers
from dynzoo.registry import get_entry

pytestmark = [
    pytest.mark.slow,
    pytest.mark.onnx,
    pytest.mark.skipif(
        not all(importlib.util.find_spec(p) for p in ("tf2onnx", "onnxruntime")),
        reason="tf2onnx and onnxruntime are not installed (pip install '.[onnx]')",
    ),
]


def _inputs(model, batch: int, seed: int) -> list[np.ndarray]:
    """Images in [0, 255] for the image input (64×64 where the size is free), N(0, 1) for the others
    (DDN's domain embedding)."""
    rng = np.random.default_rng(seed)
    shapes = [(batch, *(d or 64 for d in tensor.shape[1:])) for tensor in model.inputs]
    return [
        rng.uniform(0, 255, shape).astype("float32") if len(shape) == 4 else rng.normal(size=shape).astype("float32")
        for shape in shapes
    ]


def _calibrate_batchnorm(model, inputs) -> None:
    """Set every BatchNorm's moving statistics to those of ``inputs`` (one training-mode pass with momentum
    0): an untrained network's moving statistics (0 and 1) let activations grow block after block, until
    float32 round-off, different in any two runtimes, dominates the logits."""
    layers = [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(inputs, training=True)
    for layer, momentum in zip(layers, momenta, strict=False):
        layer.momentum = momentum


@pytest.mark.parametrize("name", dynzoo.list_models())
def test_every_registered_model_exports_to_onnx_and_onnxruntime_reproduces_it(tmp_path, name):
    import onnxruntime

    builder = get_entry(name).builder
    options = {"conditional": False} if "conditional" in inspect.signature(builder).parameters else {}
    model = dynzoo.create_model(name, weights=None, classifier_activation=None, **options)
    _calibrate_batchnorm(model, _inputs(model, 8, seed=1))
    inputs = _inputs(model, 2, seed=0)
    expected = np.asarray(model(inputs, training=False))
    assert np.abs(expected[0] - expected[1]).max() > 1e-3 * np.abs(expected).max()  # the logits follow the input
    path = tmp_path / f"{name}.onnx"
    with contextlib.redirect_stdout(io.StringIO()):  # tf2onnx's progress lines
        model.export(path, format="onnx", verbose=False)
    session = onnxruntime.InferenceSession(str(path))
    (got,) = session.run(None, {spec.name: x for spec, x in zip(session.get_inputs(), inputs, strict=False)})
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
