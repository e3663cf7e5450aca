"""Vanilla dynamic convolution (thesis §3.1, eq. 3.1): CondConv and DY-Conv as configurations of one layer.

``W(x) = Σ_k π_k(x) W_k``: K expert kernels mixed per sample. CondConv (K = 8) routes with a sigmoid
after one FC; DY-Conv (K = 4) with a softmax at temperature τ after FC → ReLU → FC, τ annealed from a
large value (the DY-Conv paper: 30 → 1 over the first 10 epochs) by :class:`TemperatureAnnealing`.

Papers: B. Yang et al., "CondConv: Conditionally Parameterized Convolutions for Efficient Inference",
NeurIPS 2019, https://arxiv.org/abs/1904.04971; Y. Chen et al., "Dynamic Convolution: Attention over
Convolution Kernels", CVPR 2020, https://arxiv.org/abs/1912.03458.
"""

from __future__ import annotations

import keras
from keras import ops

from dynzoo._compat import all_layers
from dynzoo.layers.base import (
    PACKAGE,
    channels_of,
    check_choice,
    check_int,
    conv_initializer,
    dense_initializer,
)
from dynzoo.layers.conv import torch_output_size
from dynzoo.layers.dcd import flatten_spatial, unflatten_spatial

FORMULATIONS = ("branches", "kernel")


@keras.saving.register_keras_serializable(package=PACKAGE)
class DynamicConv2D(keras.layers.Layer):
    """Dynamic convolution with K experts (thesis §3.1, eq. 3.1; CondConv [1], DY-Conv [2]).

    ``y = (Σ_k π_k(x) W_k) * x``, with ``π(x) = route(FC(…GAP(x)))``:

    * ``routing="softmax"``: ``π = softmax(z / τ)`` (DY-Conv; sums to 1, τ = ``temperature``);
    * ``routing="sigmoid"``: ``π = sigmoid(z)`` (CondConv; independent gates, τ unused).

    The attention branch is GAP → [FC(C_in // reduction) → ReLU] → FC(K) (with biases); with
    ``reduction=None`` it is GAP → FC(K) as in CondConv. The convolution itself has no bias (a BatchNorm
    follows, unless ``use_bias``: then the per-sample bias is ``Σ_k π_k b_k``) and PyTorch's symmetric
    k//2 padding.

    Two exact formulations (same weights, same outputs):

    * ``"branches"``: ``y = Σ_k π_k · (W_k * x)`` — the K static convolutions run as one conv with K·C_out
      filters (K depthwise convs when depthwise), then a weighted sum; costs K× the static conv.
    * ``"kernel"``: per-sample kernel aggregation ``W(x) = Σ_k π_k W_k`` (one FULLY_CONNECTED-sized
      matmul), applied to the k² shifted input slices with one BATCH_MATMUL (a per-sample multiply-add
      for depthwise); costs one static conv plus the aggregation.

    Args:
        filters: output channels; must be None or C_in when ``depthwise``.
        kernel_size: k (odd).
        strides: stride.
        experts: K ≥ 1 (CondConv 8, DY-Conv 4).
        routing: "softmax" or "sigmoid".
        temperature: τ > 0 of the softmax; a non-trainable variable that :class:`TemperatureAnnealing`
            changes during training.
        reduction: hidden width C_in // reduction (at least 4) of the attention branch; None for a
            single FC.
        depthwise: a depthwise dynamic conv (one k×k kernel per channel per expert).
        use_bias: one bias per expert, mixed like the kernels (CondConv's classifier).
        formulation: "branches" or "kernel" (see above).

    Input/output: (B, H, W, C_in) → (B, H', W', filters), H' = ⌊(H + 2·(k//2) − k)/s⌋ + 1.
    Per-sample coefficients: :meth:`coefficients` (B, K).
    """

    def __init__(
        self,
        filters: int | None = None,
        kernel_size: int = 1,
        strides: int = 1,
        experts: int = 4,
        routing: str = "softmax",
        temperature: float = 1.0,
        reduction: int | None = 4,
        depthwise: bool = False,
        use_bias: bool = False,
        formulation: str = "branches",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.depthwise = bool(depthwise)
        if filters is None and not self.depthwise:
            raise ValueError("`filters` is required (an integer >= 1) unless `depthwise=True`.")
        self.filters = None if filters is None else check_int("filters", filters)
        self.kernel_size = check_int("kernel_size", kernel_size)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd (PyTorch's k//2 padding), got {kernel_size}.")
        self.strides = check_int("strides", strides)
        self.experts = check_int("experts", experts)
        self.routing = check_choice("routing", routing, ("softmax", "sigmoid"))
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"`temperature` must be a number > 0, got {temperature!r}.")
        self.initial_temperature = float(temperature)
        self.reduction = None if reduction is None else check_int("reduction", reduction)
        self.formulation = check_choice("formulation", formulation, FORMULATIONS)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        cin = channels_of(input_shape, "DynamicConv2D")
        if self.depthwise and self.filters not in (None, cin):
            raise ValueError(
                f"`filters` must be None or the input channels ({cin}) when depthwise, got {self.filters}."
            )
        self.in_channels = cin
        self.out_channels = cin if self.depthwise else self.filters
        k = self.kernel_size
        per_expert = (k, k, cin, 1) if self.depthwise else (k, k, cin, self.out_channels)
        self.kernel = self.add_weight(name="kernel", shape=(self.experts, *per_expert), initializer=conv_initializer())
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.experts, self.out_channels), initializer="zeros")
        self.temperature = self.add_weight(
            name="temperature",
            shape=(),
            trainable=False,
            initializer=keras.initializers.Constant(self.initial_temperature),
        )
        self.hidden = None
        if self.reduction is not None:
            self.hidden = keras.layers.Dense(
                max(cin // self.reduction, 4),
                activation="relu",
                kernel_initializer=dense_initializer(),
                name="attention_hidden",
            )
            self.hidden.build((None, cin))
        self.logits = keras.layers.Dense(self.experts, kernel_initializer=dense_initializer(), name="attention")
        self.logits.build((None, self.hidden.units if self.hidden else cin))

    def set_temperature(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"`temperature` must be > 0, got {value!r}.")
        self.temperature.assign(float(value))

    def coefficients(self, inputs):
        """π(x), (B, K)."""
        z = ops.mean(inputs, axis=(1, 2))
        if self.hidden is not None:
            z = self.hidden(z)
        z = self.logits(z)
        return ops.softmax(z / self.temperature, axis=-1) if self.routing == "softmax" else ops.sigmoid(z)

    def _padded(self, x):
        pad = self.kernel_size // 2
        return ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]]) if pad else x

    def call(self, inputs):
        pi = self.coefficients(inputs)
        y = self._branches(inputs, pi) if self.formulation == "branches" else self._aggregated(inputs, pi)
        if self.bias is not None:
            y = y + ops.reshape(ops.matmul(pi, self.bias), (-1, 1, 1, self.out_channels))
        return y

    def _branches(self, inputs, pi):
        x, k, s = self._padded(inputs), self.kernel_size, self.strides
        cout = self.out_channels
        if self.depthwise:
            outs = [ops.depthwise_conv(x, self.kernel[e], strides=s, padding="valid") for e in range(self.experts)]
        else:
            stacked = ops.reshape(ops.transpose(self.kernel, (1, 2, 3, 0, 4)), (k, k, self.in_channels, -1))
            y = ops.conv(x, stacked, strides=s, padding="valid")
            outs = [y[..., e * cout : (e + 1) * cout] for e in range(self.experts)]
        pi = ops.reshape(pi, (-1, 1, 1, self.experts))
        total = outs[0] * pi[..., 0:1]
        for e in range(1, self.experts):
            total = total + outs[e] * pi[..., e : e + 1]
        return total

    def _shifted_slices(self, inputs):
        """The k² input slices that a k×k conv with stride s multiplies by each kernel tap, (i, j) order."""
        x, k, s = self._padded(inputs), self.kernel_size, self.strides
        h, w = (torch_output_size(n, k, s) for n in inputs.shape[1:3])
        return [x[:, i : i + s * (h - 1) + 1 : s, j : j + s * (w - 1) + 1 : s, :] for i in range(k) for j in range(k)]

    def _aggregated(self, inputs, pi):
        k, cin, cout = self.kernel_size, self.in_channels, self.out_channels
        kernel = ops.matmul(pi, ops.reshape(self.kernel, (self.experts, -1)))  # (B, k²·C_in·C_out)
        slices = self._shifted_slices(inputs) if k > 1 or self.strides > 1 else [inputs]
        if self.depthwise:
            kernel = ops.reshape(kernel, (-1, k * k, 1, cin))
            out = slices[0] * ops.expand_dims(kernel[:, 0], 1)
            for t in range(1, k * k):
                out = out + slices[t] * ops.expand_dims(kernel[:, t], 1)
            return out
        patches = ops.concatenate(slices, axis=-1) if len(slices) > 1 else slices[0]
        kernel = ops.reshape(kernel, (-1, k * k * cin, cout))
        return unflatten_spatial(ops.matmul(flatten_spatial(patches), kernel), patches)

    def compute_output_shape(self, input_shape):
        h, w = (torch_output_size(n, self.kernel_size, self.strides) for n in input_shape[1:3])
        cout = input_shape[-1] if self.depthwise else self.filters
        return (input_shape[0], h, w, cout)

    def compute_madds(self, input_shape) -> int:
        """The conv as computed by the formulation, plus the attention branch's FCs."""
        if not self.built:
            self.build(input_shape)
        _, h, w, cout = self.compute_output_shape(input_shape)
        k2, K = self.kernel_size**2, self.experts
        per_output = k2 * (1 if self.depthwise else self.in_channels)
        static = h * w * cout * per_output
        if self.formulation == "branches":
            conv = K * static + K * h * w * cout
        else:
            conv = static + K * per_output * cout
        attention = (self.hidden.units * (self.in_channels + K)) if self.hidden else self.in_channels * K
        return conv + attention

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "experts": self.experts,
            "routing": self.routing,
            "temperature": self.initial_temperature,
            "reduction": self.reduction,
            "depthwise": self.depthwise,
            "use_bias": self.use_bias,
            "formulation": self.formulation,
        }


def dynamic_conv_layers(model: keras.Model) -> list[DynamicConv2D]:
    """Every DynamicConv2D inside ``model``, nested ones included."""
    return [
        layer for layer in all_layers(model, include_self=False, recursive=True) if isinstance(layer, DynamicConv2D)
    ]


class TemperatureAnnealing(keras.callbacks.Callback):
    """Anneal the softmax temperature of every :class:`DynamicConv2D` of the model linearly from
    ``start`` to ``end`` over the first ``epochs`` epochs, step by step (DY-Conv: 30 → 1 over 10 epochs).

    Args:
        start: τ at the first step (> 0).
        end: τ from epoch ``epochs`` on (> 0).
        epochs: length of the ramp in epochs (≥ 1).
        steps_per_epoch: steps of one epoch; default the ``steps`` Keras passes to ``fit``.
    """

    def __init__(self, start: float = 30.0, end: float = 1.0, epochs: int = 10, steps_per_epoch: int | None = None):
        super().__init__()
        for name, value in (("start", start), ("end", end)):
            if not value > 0:
                raise ValueError(f"`{name}` must be > 0, got {value!r}.")
        self.start, self.end = float(start), float(end)
        self.epochs = check_int("epochs", epochs)
        self.steps_per_epoch = None if steps_per_epoch is None else check_int("steps_per_epoch", steps_per_epoch)
        self._epoch = 0

    def value(self, epoch: int, step: int = 0) -> float:
        steps = self.steps_per_epoch or 1
        progress = min((epoch + step / steps) / self.epochs, 1.0)
        return self.start + (self.end - self.start) * progress

    def on_train_begin(self, logs=None):
        if self.steps_per_epoch is None:
            self.steps_per_epoch = self.params.get("steps") or 1
        self._layers = dynamic_conv_layers(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        tau = self.value(self._epoch, batch)
        for layer in self._layers:
            layer.temperature.assign(tau)
