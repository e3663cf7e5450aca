"""Parity with the official fixtures, and the deliberate bugs that parity must catch.

``parity_error`` is the one parity measure of the suite: per sample, the largest logit error in units of
the tolerance (1e-4 of that sample's max |logit|, ``../shared/fixtures/official/README.md``). A parity
test passes when every sample is below 1; a converted model with one of :data:`BUGS` injected must put
every sample above it, or the parity test could not tell that model from a correct one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import numpy as np
import pytest
from keras import ops

from dynzoo._compat import all_layers
from dynzoo.layers import dcd
from dynzoo.layers.dcd import DCDConv2D, DCDDense, _DCDBase
from dynzoo.layers.shift_max import DynamicShiftMax
from dynzoo.layers.shuffle import ChannelShuffle

RELATIVE_TOLERANCE = 1e-4


def official_io(directory, fixture: str) -> tuple[np.ndarray, np.ndarray]:
    """A fixture's input (``input_nchw`` made NHWC for Keras) and the official model's logits."""
    io = np.load(directory / f"{fixture}_io.npz")
    return io["input_nchw"].transpose(0, 2, 3, 1), io["logits"]


def parity_error(got, expected: np.ndarray) -> np.ndarray:
    """Per sample: max |got − expected| / (1e-4 · max |expected|); a non-finite output is infinitely wrong."""
    got = np.asarray(got, "float64")
    error = np.abs(got - expected).max(axis=-1) / (RELATIVE_TOLERANCE * np.abs(expected).max(axis=-1))
    return np.where(np.isfinite(got).all(axis=-1), error, np.inf)


def assert_parity(got, expected: np.ndarray) -> None:
    error = parity_error(got, expected)
    assert (error <= 1).all(), f"logit error per sample, in tolerances: {error}"


def assert_input_sensitive(model: keras.Model, x: np.ndarray, expected: np.ndarray) -> None:
    """The fixture's logits depend on its input: an all-zero input moves every sample's logits far past
    the tolerance (a model whose features were ignored could not pass)."""
    zero = np.asarray(model(np.zeros_like(x), training=False))
    assert (parity_error(zero, expected) > 100).all(), parity_error(zero, expected)


def _layers(model: keras.Model, kind) -> list:
    return [layer for layer in all_layers(model) if isinstance(layer, kind)]


def _batch_mean(x):
    """Every sample replaced by the batch mean: what a branch that pools over the batch would see."""
    return ops.broadcast_to(ops.mean(x, axis=0, keepdims=True), ops.shape(x))


@contextlib.contextmanager
def _batch_mean_coefficients(model: keras.Model, monkeypatch) -> Iterator[None]:
    """The dynamic coefficients computed from the batch-mean input instead of each sample's own."""
    squeezed, branch, pool = DynamicShiftMax._squeezed, _DCDBase._branch, dcd.adaptive_pool
    monkeypatch.setattr(DynamicShiftMax, "_squeezed", lambda self, x: squeezed(self, _batch_mean(x)))
    monkeypatch.setattr(_DCDBase, "_branch", lambda self, pooled: branch(self, _batch_mean(pooled)))
    monkeypatch.setattr(dcd, "adaptive_pool", lambda x, *args, **kwargs: pool(_batch_mean(x), *args, **kwargs))
    yield


@contextlib.contextmanager
def _first_bn_statistics_swapped(model: keras.Model, monkeypatch) -> Iterator[None]:
    bn = _layers(model, keras.layers.BatchNormalization)[0]
    mean, variance = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    bn.moving_mean.assign(variance)
    bn.moving_variance.assign(mean)
    try:
        yield
    finally:
        bn.moving_mean.assign(mean)
        bn.moving_variance.assign(variance)


@contextlib.contextmanager
def _classifier_bias_dropped(model: keras.Model, monkeypatch) -> Iterator[None]:
    """The bias of the last Linear layer with one (the classifier's) set to zero."""
    dense = [layer for layer in _layers(model, keras.layers.Dense) if layer.use_bias][-1]
    bias = dense.bias.numpy()
    dense.bias.assign(np.zeros_like(bias))
    try:
        yield
    finally:
        dense.bias.assign(bias)


@contextlib.contextmanager
def _phi_branch_dropped(model: keras.Model, monkeypatch) -> Iterator[None]:
    """DCD without its dynamic channel fusion P Φ(x) Qᵀ: every DCD layer keeps only Λ(x) W0."""
    layers = _layers(model, (DCDConv2D, DCDDense))
    assert layers, "no DCD layer in this model"
    for layer in layers:
        monkeypatch.setattr(layer, "channel_fusion", False)
    yield


@contextlib.contextmanager
def _first_shuffle_skipped(model: keras.Model, monkeypatch) -> Iterator[None]:
    """The first channel shuffle (in the stem) leaves the channels in place: one group is the identity."""
    monkeypatch.setattr(_layers(model, ChannelShuffle)[0], "groups", [1])
    yield


BUGS = {
    "batch_mean_coefficients": _batch_mean_coefficients,
    "bn_mean_variance_swapped": _first_bn_statistics_swapped,
    "classifier_bias_dropped": _classifier_bias_dropped,
    "phi_branch_dropped": _phi_branch_dropped,
    "channel_shuffle_skipped": _first_shuffle_skipped,
}


def logits_with_bug(model: keras.Model, bug: str, x: np.ndarray) -> np.ndarray:
    """``model``'s logits for ``x`` with ``bug`` injected (an eager call, so that a patched method or
    attribute takes effect); the model is restored afterwards."""
    with pytest.MonkeyPatch.context() as patch, BUGS[bug](model, patch):
        return np.asarray(model(x, training=False))
