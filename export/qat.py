"""Quantization-aware training (QAT) on Keras 3 fake-quant ops, for the int8 TFLite export.

tensorflow-model-optimization only wraps tf_keras (Keras 2) models, and its wrappers stop at layer
boundaries, while the tensors that int8 quantizes worst lie inside dynamic layers (per-sample kernels,
coefficients and products). Here the fine-tuning runs every layer in its exported (inference) form —
BatchNorms folded with their moving statistics, which stay frozen — and rounds to its 8-bit grid

* every tensor a layer marks with :func:`dynzoo.layers.base.quant_point` (the internal tensors of the
  dynamic layers and of the sequential blocks), and
* the output of every layer of the functional graph, except where the converter fuses the next layer
  into it (BatchNorm, ReLU),

with ``keras.quantizers.fake_quant_with_min_max_vars`` (straight-through gradients). The ranges are
the min/max over the calibration images, as the converter's calibration measures them, re-measured
after every epoch. The weights learn to live with the rounding; the model is then exported by the
ordinary int8 path (``convert(model, "int8", calibration)``), whose weights are per-channel int8.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from dynzoo._compat import functional_class
from dynzoo.export.tflite import output_activation
from dynzoo.layers import base
from dynzoo.train.optimizers import FusedAdam

NUM_BITS = 8


@dataclass
class QATResult:
    """What :func:`quantization_aware_training` did: ``losses`` is the mean training loss of each epoch,
    ``points`` the number of fake-quantized tensors."""

    model: keras.Model
    losses: list[float]
    points: int


class _FakeQuantizer:
    """The hook behind ``quant_point``: records ranges while observing, rounds to them while training."""

    def __init__(self):
        self.ranges: dict[str, tuple[float, float]] = {}
        self.labels: dict[str, str] = {}  # key → "layer name/tag"
        self.variables: dict[str, tuple[keras.Variable, keras.Variable]] = {}
        self.observing = True

    def __call__(self, layer, x, tag: str):
        key = f"{id(layer)}/{tag}"
        if self.observing:
            value = ops.convert_to_numpy(x)
            lo, hi = float(value.min()), float(value.max())
            if key in self.ranges:
                lo, hi = min(lo, self.ranges[key][0]), max(hi, self.ranges[key][1])
            self.ranges[key] = (lo, hi)
            self.labels[key] = f"{layer.name}/{tag}"
            return x
        if key not in self.variables:
            raise RuntimeError(
                f"tensor {tag!r} of layer {layer.name!r} appeared in training but not while the "
                "ranges were measured; a layer's inference form must not depend on the batch."
            )
        lo, hi = self.variables[key]
        return keras.quantizers.fake_quant_with_min_max_vars(x, lo, hi, num_bits=NUM_BITS)

    def assign_ranges(self) -> None:
        for key, (lo, hi) in self.ranges.items():
            lo, hi = min(lo, 0.0), max(hi, 0.0)  # the int8 grid always holds zero
            if key not in self.variables:
                self.variables[key] = (keras.Variable(lo, trainable=False), keras.Variable(hi, trainable=False))
            else:
                self.variables[key][0].assign(lo)
                self.variables[key][1].assign(hi)

    @contextlib.contextmanager
    def active(self, observing: bool):
        previous, base._fake_quantizer = base._fake_quantizer, self
        self.observing = observing
        try:
            yield
        finally:
            base._fake_quantizer = previous


def _unfused_outputs(model: keras.Model) -> set[int]:
    """ids of the layers whose output is quantized in the export: every layer, except those all of
    whose consumers the converter fuses into them."""
    consumers: dict[int, list] = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                producer = tensor._keras_history.operation
                consumers.setdefault(id(producer), []).append(layer)
    return {
        id(layer)
        for layer in model.layers
        if not (consumers.get(id(layer)) and all(base.fuses_into_previous(c) for c in consumers[id(layer)]))
    }


class _OutputPoint(keras.layers.Layer):
    """A ``quant_point`` on a layer's output, as a node of the functional graph (named after the layer)."""

    def call(self, x):
        return base.quant_point(self, x, "output")


def fake_quantized(model: keras.Model, quantizer: _FakeQuantizer) -> keras.Model:
    """``model``'s graph with a ``quant_point`` on the output of every layer the export quantizes (an
    ``<layer>_quant`` node after it); its other layers (and weights) are ``model``'s own."""
    if not isinstance(model, functional_class()):
        raise ValueError(
            "quantization-aware training needs a functional keras.Model (a registered dynzoo "
            f"model or a loaded .keras file), got {type(model).__name__}."
        )
    quantized = _unfused_outputs(model)

    def call(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if id(layer) not in quantized:
            return out
        return keras.tree.map_structure(lambda t: _OutputPoint(name=f"{layer.name}_quant")(t), out)

    return keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)


def _check(images, labels, model, epochs, batch_size, learning_rate):
    images = np.asarray(images, "float32")
    labels = np.asarray(labels)
    expected = tuple(model.inputs[0].shape[1:])
    if images.ndim != 4 or any(e is not None and e != s for e, s in zip(expected, images.shape[1:], strict=False)):
        raise ValueError(
            f"`images` must have shape (N, {', '.join(str(e) for e in expected)}) for this model, got {images.shape}."
        )
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"`labels` must be {len(images)} integer class indices (one per image), got shape "
            f"{labels.shape} of {labels.dtype}."
        )
    classes = model.outputs[0].shape[-1]
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(
            f"`labels` must lie in [0, {classes}) (the model's classes), got {labels.min()}…{labels.max()}."
        )
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be > 0, got {learning_rate!r}.")
    return images, labels


def quantization_aware_training(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    calibration: np.ndarray | None = None,
    epochs: int = 3,
    batch_size: int = 32,
    learning_rate: float = 1e-4,
    seed: int = 0,
    verbose: int = 1,
) -> QATResult:
    """Fine-tune ``model`` **in place** with its int8 rounding simulated (module docstring), then export it
    with ``convert(model, "int8", representative_data=calibration)``.

    Args:
        model: a trained functional model (a dynzoo model, a loaded ``.keras`` file), logits or softmax out.
        images: training images, the model's input (N, H, W, C), float.
        labels: their integer classes (N,).
        calibration: images whose min/max set the ranges (the export's calibration images); default the
            first 128 training images.
        epochs: passes over ``images``.
        batch_size: images per step.
        learning_rate: Adam's; small, since the weights are already trained.
        seed: order of the batches.
        verbose: 1 shows a progress bar per epoch.
    """
    import tensorflow as tf

    images, labels = _check(images, labels, model, epochs, batch_size, learning_rate)
    calibration = images[:128] if calibration is None else np.asarray(calibration, "float32")
    quantizer = _FakeQuantizer()
    qat_model = fake_quantized(model, quantizer)

    def measure_ranges():
        quantizer.ranges.clear()
        with quantizer.active(observing=True):
            for start in range(0, len(calibration), batch_size):
                qat_model(calibration[start : start + batch_size], training=False)
        quantizer.assign_ranges()

    measure_ranges()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=output_activation(model) != "softmax")
    optimizer = FusedAdam(learning_rate)
    weights = model.trainable_variables
    optimizer.build(weights)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, qat_model(x, training=False))  # the exported form: BatchNorms frozen
        grads = tape.gradient(loss, weights)
        optimizer.apply_gradients([(g, w) for g, w in zip(grads, weights, strict=False) if g is not None])
        return loss

    rng = np.random.default_rng(seed)
    steps = math.ceil(len(images) / batch_size)
    losses = []
    for epoch in range(epochs):
        bar = keras.utils.Progbar(steps, verbose=verbose, stateful_metrics=["loss"]) if verbose else None
        if verbose:
            print(f"QAT epoch {epoch + 1}/{epochs}")
        order, total = rng.permutation(len(images)), 0.0
        with quantizer.active(observing=False):
            for step in range(steps):
                batch = order[step * batch_size : (step + 1) * batch_size]
                loss = float(train_step(images[batch], labels[batch]))
                total += loss * len(batch)
                if bar is not None:
                    bar.update(step + 1, [("loss", loss)])
        losses.append(total / len(images))
        measure_ranges()
    return QATResult(model, losses, len(quantizer.ranges))
