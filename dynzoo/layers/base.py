"""Pieces shared by every dynzoo layer: argument checks, MAdds counting and sequential blocks.

MAdds follow the papers' convention (thesis §2.4 of the spec): a convolution costs
``output elements × kernel area × input channels per group``, a dense layer ``inputs × outputs``;
pooling, BatchNorm, additions and biases are free. Layers with a dynamic part add their own
element-wise multiplications through ``compute_madds``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from typing import Any

import keras
from keras import ops

PACKAGE = "dynzoo"

# Set inside :func:`export_form`: None outside, "float" or "integer" inside.
_export_form: str | None = None


@contextlib.contextmanager
def export_form(integer: bool = False):
    """Inside, layers that have two forms of one computation trace in their export form, the ops the TFLite
    exporter converts (and XNNPACK runs fastest); outside, in their compute form, the ops that train and
    predict fastest in Keras (grouped and unequal-stride convolutions, :mod:`dynzoo.layers.conv`; Dynamic
    Shift-Max's slicing, :mod:`dynzoo.layers.shift_max`). Both forms compute the same values from the
    same weights, tested with their gradients.

    ``integer=True`` selects the form for a full-integer (int8) export: only ops that XNNPACK runs on
    int8 tensors, which keeps the graph in one XNNPACK partition (Dynamic Shift-Max element-wise, its max
    without MAXIMUM; ``benchmarks/int8_delegation.py`` lists the int8 ops XNNPACK leaves out), and in the
    forms its int8 kernels run fastest (channel moves as 1×1 convolutions, :mod:`dynzoo.layers.shuffle`)."""
    global _export_form
    outer, _export_form = _export_form, "integer" if integer else "float"
    try:
        yield
    finally:
        _export_form = outer


def in_export_form() -> bool:
    """Whether layers trace in their export form (inside :func:`export_form`)."""
    return _export_form is not None


def in_integer_export_form() -> bool:
    """Whether layers trace in the full-integer export form (inside ``export_form(integer=True)``)."""
    return _export_form == "integer"


def has_integer_export_form(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` traces differently in the full-integer export form (its class sets
    ``integer_export_form = True``): a model without such layers exports int8 from its float SavedModel."""
    return getattr(layer, "integer_export_form", False)


# Set by ``dynzoo.export.qat`` while it observes ranges or fine-tunes; None otherwise.
_fake_quantizer = None


def quant_point(layer: keras.layers.Layer, x, tag: str):
    """Mark a tensor that an integer TFLite export stores in 8 bits (``tag`` names it within ``layer``).

    The identity, except during quantization-aware training (:mod:`dynzoo.export.qat`), which records
    its range and then rounds it to that 8-bit grid in the forward pass. Layers call it on the tensors of
    their exported (inference) form: the per-sample coefficients, kernels and products that int8
    quantizes inside one Keras layer.
    """
    return x if _fake_quantizer is None else _fake_quantizer(layer, x, tag)


def fuses_into_previous(layer: keras.layers.Layer) -> bool:
    """Whether the converter folds ``layer`` into the op before it, so that the tensor between them is
    never quantized (BatchNorm; ReLU and ReLU6 after a convolution)."""
    if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.ReLU)):
        return True
    activation = getattr(getattr(layer, "activation", None), "__name__", "")
    return isinstance(layer, keras.layers.Activation) and activation in ("relu", "relu6")


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise a ValueError naming the argument and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return value


def check_pair(name: str, value: Any, minimum: int = 1) -> tuple[int, int]:
    """Accept an int or a pair of ints; return a pair."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"`{name}` must be an integer or a pair of integers, got {value!r}.")
    return check_int(name, value[0], minimum), check_int(name, value[1], minimum)


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")
    return value


def check_divisible(name: str, value: int, divisor: int, divisor_name: str) -> None:
    if value % divisor:
        raise ValueError(f"`{name}` ({value}) must be divisible by `{divisor_name}` ({divisor}).")


def channels_of(input_shape: Sequence[int | None], layer_name: str) -> int:
    """The static channel count of a channels-last input, or a clear error."""
    channels = input_shape[-1]
    if channels is None:
        raise ValueError(f"{layer_name} needs a known channel count (last axis), got shape {input_shape}.")
    return int(channels)


def count_madds(layer: keras.layers.Layer, input_shape: Sequence[int | None]) -> int:
    """MAdds of one layer for one sample of ``input_shape`` (batch axis included, ignored)."""
    if hasattr(layer, "compute_madds"):
        return int(layer.compute_madds(input_shape))
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
        out = layer.compute_output_shape(input_shape)
        kh, kw = layer.kernel_size
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            per_output = kh * kw
        else:
            per_output = kh * kw * input_shape[-1] // layer.groups
        return math.prod(out[1:]) * per_output
    if isinstance(layer, keras.layers.Dense):
        out = layer.compute_output_shape(input_shape)
        return math.prod(out[1:]) * input_shape[-1]
    return 0


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` that trains with TensorFlow's fused kernel.

    Keras computes a training step's statistics in separate ops (mean, squared difference, mean, then
    the normalisation), and their gradient in a dozen more passes over the feature map; on the TensorFlow
    backend this layer runs ``FusedBatchNormV3`` instead, one pass forward and one backward (a third of
    MicroNet-M0's training step went to BatchNorm, ``benchmarks/train_profile.py``). The result is the
    same to float round-off, and so is the moving-variance update: the fused kernel returns the
    unbiased batch variance, which is scaled back to Keras' biased one. Inference, other backends and
    the cases the kernel does not cover (a mask, renorm, synchronized statistics, a non-last axis, other
    than float32 or 4-D) run Keras' own code.
    """

    def _fused_training(self, inputs, training, mask) -> bool:
        return (
            training
            and self.trainable
            and mask is None
            and keras.backend.backend() == "tensorflow"
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and self.center
            and self.scale
            and inputs.dtype == "float32"
            and self.compute_dtype == "float32"
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused_training(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # the TensorFlow backend is active, so TensorFlow is installed

        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=self.gamma,
            offset=self.beta,
            mean=tf.zeros([0]),
            variance=tf.zeros([0]),
            epsilon=self.epsilon,
            exponential_avg_factor=1.0,
            data_format="NHWC",
            is_training=True,
        )
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), variance.dtype)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)  # unbiased → biased, as Keras keeps it
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return y


def batchnorm(name: str | None = None, axis: int = -1) -> BatchNormalization:
    """BatchNorm with PyTorch's epsilon and momentum, so official weights convert exactly."""
    return BatchNormalization(axis=axis, epsilon=1e-5, momentum=0.9, name=name)


def conv_initializer() -> keras.initializers.Initializer:
    """N(0, sqrt(2 / (kh·kw·C_out))), the authors' initialisation for every convolution."""
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def dense_initializer() -> keras.initializers.Initializer:
    """N(0, 0.01), the authors' initialisation for linear layers."""
    return keras.initializers.RandomNormal(stddev=0.01)


def bn_affine(bn: keras.layers.BatchNormalization):
    """(scale, shift) of a BatchNormalization in inference: ``bn(z) = scale ⊙ z + shift``."""
    scale = bn.gamma / ops.sqrt(bn.moving_variance + bn.epsilon)
    return scale, bn.beta - bn.moving_mean * scale


class SequenceBlock(keras.layers.Layer):
    """A layer made of sub-layers applied one after the other, with an optional identity skip.

    Subclasses implement ``make_steps(in_channels)``, returning ``[(official_name, layer), …]``;
    ``official_name`` is the sub-module path of the layer in the authors' PyTorch code (``None`` where
    the code has no module). It drives checkpoint conversion and MAdds counting, so neither needs
    per-block code.
    """

    def make_steps(self, in_channels: int) -> list[tuple[str | None, keras.layers.Layer]]:
        raise NotImplementedError

    def uses_residual(self, in_channels: int) -> bool:
        return False

    def build(self, input_shape):
        in_channels = channels_of(input_shape, type(self).__name__)
        steps = self.make_steps(in_channels)
        self.official_names = [name for name, _ in steps]
        self.steps = [layer for _, layer in steps]
        self.residual = self.uses_residual(in_channels)
        shape = tuple(input_shape)
        for layer in self.steps:
            layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))

    def call(self, inputs, training=None):
        x, i, steps = inputs, 0, self.steps
        while i < len(steps):
            following = steps[i + 1] if i + 1 < len(steps) else None
            if getattr(steps[i], "takes_output_order", False) and hasattr(following, "permutation"):
                # a shift-max layer takes the channel shuffle after it into its output order
                x = steps[i](x, output_order=tuple(int(j) for j in following.permutation))
                i += 1
            else:
                x = steps[i](x, training=training)
            if i + 1 < len(steps) and not fuses_into_previous(steps[i + 1]):
                x = quant_point(self, x, f"step{i}")
            i += 1
        return quant_point(self, x + inputs, "sum") if self.residual else x

    def compute_output_shape(self, input_shape):
        if not self.built:
            self.build(input_shape)
        shape = tuple(input_shape)
        for layer in self.steps:
            shape = tuple(layer.compute_output_shape(shape))
        return shape

    def compute_madds(self, input_shape) -> int:
        total, shape = 0, tuple(input_shape)
        for layer in self.steps:
            total += count_madds(layer, shape)
            shape = tuple(layer.compute_output_shape(shape))
        return total

    def official_children(self) -> list[tuple[str, keras.layers.Layer]]:
        """(PyTorch sub-module path, Keras layer) for every step that holds weights."""
        return [(n, l) for n, l in zip(self.official_names, self.steps, strict=False) if n is not None and l.weights]


def make_divisible(value: float, divisor: int = 4) -> int:
    """The official rounding of squeeze widths: nearest multiple of ``divisor``, at least ``divisor``,
    and never more than 10% below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded
