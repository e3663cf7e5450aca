"""Dynamic routing between candidate branches (DRNets: Cai, Shu, Wang, WACV 2021, §3).

Every connection of a DRNet cell holds B+1 candidate branches (the DARTS operations: separable and
dilated convolutions, 3×3 pooling, identity). A :class:`RouterNet` per cell turns the cell's inputs into
branch importances; training mixes every branch with Gumbel-softmax weights (eq. 4, temperature τ
annealed by :class:`GumbelTemperatureSchedule`); inference keeps, per connection, the most important
branches until their weight reaches the threshold T, renormalised (§3.3, :func:`threshold_select`, written
with TFLite builtin ops only), and skips the others.

Paper: S. Cai, Y. Shu, W. Wang, "Dynamic Routing Networks", WACV 2021, https://arxiv.org/abs/1905.04849.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import ops

from dynzoo._compat import all_layers
from dynzoo.layers.base import (
    PACKAGE,
    SequenceBlock,
    batchnorm,
    channels_of,
    check_choice,
    check_int,
    conv_initializer,
    count_madds,
    dense_initializer,
)
from dynzoo.layers.conv import SymmetricDepthwiseConv2D, torch_output_size

# name → (kind, kernel, dilation); the paper's set (§4.1) is PAPER_OPS, the fast-forward branch last.
CANDIDATE_OPS = {
    "max_pool_3x3": ("max_pool", 3, 1),
    "avg_pool_3x3": ("avg_pool", 3, 1),
    "sep_conv_3x3": ("sep_conv", 3, 1),
    "sep_conv_5x5": ("sep_conv", 5, 1),
    "dil_conv_3x3": ("dil_conv", 3, 2),
    "dil_conv_5x5": ("dil_conv", 5, 2),
    "skip_connect": ("skip", 1, 1),
}
PAPER_OPS = ("max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5", "skip_connect")


def gumbel_softmax(logits, temperature, seed=None):
    """Gumbel-softmax recalibration (eq. 4): ``softmax((w + g) / τ)``, ``g = −log(−log u)``, u ~ U(0, 1).

    Soft (no straight-through), over the last axis. ``seed``: an int or a ``keras.random.SeedGenerator``.
    """
    u = keras.random.uniform(ops.shape(logits), minval=1e-6, maxval=1.0 - 1e-6, seed=seed)
    return ops.softmax((logits - ops.log(-ops.log(u))) / temperature, axis=-1)


def threshold_select(probs, threshold):
    """Inference routing (§3.3): keep the most important branches until their mass reaches ``threshold``.

    Sort-free, so it converts to TFLite builtins (GREATER, EQUAL, LESS, SUM, DIV …): branch b is kept
    when the mass of the branches ranked before it, ``before_b = Σ_b' p_b' [p_b' > p_b or (p_b' = p_b
    and b' < b)]``, is below T — exactly the shortest prefix of the sorted list that reaches T, the branch
    that crosses T included. T ≥ 1 keeps every branch.

    Args:
        probs: (..., n) importances (each row sums to 1).
        threshold: T in (0, 1]; a float or a scalar tensor.

    Returns:
        (weights, mask): the kept importances renormalised to sum to 1, zero elsewhere; the 0/1 mask.
    """
    n = probs.shape[-1]
    other = ops.expand_dims(probs, -2)  # (..., 1, n): p_b'
    this = ops.expand_dims(probs, -1)  # (..., n, 1): p_b
    earlier = ops.convert_to_tensor([[1.0 if j < i else 0.0 for j in range(n)] for i in range(n)], probs.dtype)
    ranked_before = (
        ops.cast(ops.greater(other, this), probs.dtype) + ops.cast(ops.equal(other, this), probs.dtype) * earlier
    )
    before = ops.sum(ranked_before * other, axis=-1)
    threshold = ops.cast(threshold, probs.dtype)
    mask = ops.cast(ops.logical_or(ops.less(before, threshold), ops.greater_equal(threshold, 1.0)), probs.dtype)
    kept = probs * mask
    return kept / ops.sum(kept, axis=-1, keepdims=True), mask


def subsample(x, strides: int):
    """Every ``strides``-th row and column, starting at the first (a STRIDED_SLICE)."""
    return x if strides == 1 else x[:, ::strides, ::strides, :]


@keras.saving.register_keras_serializable(package=PACKAGE)
class ReLUConvBN(SequenceBlock):
    """ReLU → 1×1 convolution → BN: the DARTS preprocessing of a cell input (C_in → ``filters``).

    Args:
        filters: output channels.
    """

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_int("filters", filters)

    def make_steps(self, in_channels):
        return [
            (None, keras.layers.ReLU()),
            (None, keras.layers.Conv2D(self.filters, 1, use_bias=False, kernel_initializer=conv_initializer())),
            (None, batchnorm()),
        ]

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FactorizedReduce(keras.layers.Layer):
    """Halve the resolution without losing pixels (DARTS): ReLU, then two 1×1 stride-2 convolutions, one on
    ``x`` and one on ``x`` shifted by one pixel, concatenated (``filters // 2`` and the rest), then BN.

    Input (B, H, W, C_in) → (B, ⌈H/2⌉, ⌈W/2⌉, ``filters``). DARTS defines it for even sizes only (its two
    branches differ by one row at odd ones); here the shifted branch gets one zero row and column at the
    bottom and right, which stride 2 reaches only at odd sizes, so even sizes are computed as DARTS does.

    Args:
        filters: output channels (≥ 2).
    """

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_int("filters", filters, minimum=2)
        split = (self.filters // 2, self.filters - self.filters // 2)
        self.convs = [
            keras.layers.Conv2D(
                f, 1, strides=2, use_bias=False, kernel_initializer=conv_initializer(), name=f"conv_{i}"
            )
            for i, f in enumerate(split)
        ]
        self.bn = batchnorm(name="bn")

    def build(self, input_shape):
        channels_of(input_shape, "FactorizedReduce")
        for conv in self.convs:
            conv.build(input_shape)
        self.bn.build(self.compute_output_shape(input_shape))

    def call(self, inputs, training=None):
        x = ops.relu(inputs)
        shifted = x[:, 1:, 1:, :]
        if any(size is None or size % 2 for size in x.shape[1:3]):
            shifted = ops.pad(shifted, ((0, 0), (0, 1), (0, 1), (0, 0)))
        y = ops.concatenate([self.convs[0](x), self.convs[1](shifted)], axis=-1)
        return self.bn(y, training=training)

    def compute_output_shape(self, input_shape):
        half = [None if s is None else (s + 1) // 2 for s in input_shape[1:3]]
        return (input_shape[0], *half, self.filters)

    def compute_madds(self, input_shape) -> int:
        b, h, w, _ = self.compute_output_shape(input_shape)
        return h * w * input_shape[-1] * self.filters

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CandidateOp(keras.layers.Layer):
    """One candidate branch of a connection (DRNets §4.1; DARTS definitions), C → C channels.

    * ``sep_conv_kxk``: [ReLU, dw k×k stride s, pw 1×1, BN, ReLU, dw k×k, pw 1×1, BN] (two stacked
      separable convolutions);
    * ``dil_conv_kxk``: ReLU, dw k×k dilation 2, pw 1×1, BN (stride 2: computed at stride 1, subsampled);
    * ``max_pool_3x3`` / ``avg_pool_3x3``: 3×3 pooling with PyTorch's padding 1 (the average excludes the
      padding), no BN; stride 2 keeps every other window of the stride-1 pooling;
    * ``skip_connect``: identity, or :class:`FactorizedReduce` at stride 2.

    Input (B, H, W, C) → (B, ⌈H/s⌉, ⌈W/s⌉, C).

    Args:
        op: one of :data:`CANDIDATE_OPS`.
        channels: C, the input and output channels.
        strides: 1 or 2.
    """

    def __init__(self, op: str, channels: int, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.op = check_choice("op", op, CANDIDATE_OPS)
        self.channels = check_int("channels", channels)
        self.strides = check_choice("strides", strides, (1, 2))
        self.kind, self.kernel_size, self.dilation = CANDIDATE_OPS[op]
        self.steps = self._make_steps()

    def _make_steps(self) -> list[keras.layers.Layer]:
        k, s, c = self.kernel_size, self.strides, self.channels

        def pw():
            return keras.layers.Conv2D(c, 1, use_bias=False, kernel_initializer=conv_initializer())

        if self.kind == "sep_conv":
            return [
                keras.layers.ReLU(),
                SymmetricDepthwiseConv2D(k, s, use_bias=False, depthwise_initializer=conv_initializer()),
                pw(),
                batchnorm(),
                keras.layers.ReLU(),
                SymmetricDepthwiseConv2D(k, 1, use_bias=False, depthwise_initializer=conv_initializer()),
                pw(),
                batchnorm(),
            ]
        if self.kind == "dil_conv":
            return [
                keras.layers.ReLU(),
                keras.layers.DepthwiseConv2D(
                    k,
                    padding="same",
                    dilation_rate=self.dilation,
                    use_bias=False,
                    depthwise_initializer=conv_initializer(),
                ),
                pw(),
                batchnorm(),
            ]
        if self.kind == "max_pool":
            return [keras.layers.MaxPooling2D(3, strides=1, padding="same")]
        if self.kind == "avg_pool":
            return [keras.layers.AveragePooling2D(3, strides=1, padding="same")]  # TF's "same" excludes padding
        return [FactorizedReduce(c)] if s == 2 else []

    def build(self, input_shape):
        if channels_of(input_shape, "CandidateOp") != self.channels:
            raise ValueError(f"CandidateOp: input has {input_shape[-1]} channels, `channels` is {self.channels}.")
        shape = tuple(input_shape)
        for layer in self.steps:
            layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))

    def _subsampled_after(self) -> int | None:
        """Index of the step after which a stride-2 branch computed at stride 1 is subsampled."""
        if self.strides == 1:
            return None
        return {"dil_conv": 1, "max_pool": 0, "avg_pool": 0}.get(self.kind)

    def call(self, inputs, training=None):
        x, cut = inputs, self._subsampled_after()
        for i, layer in enumerate(self.steps):
            x = layer(x, training=training)
            if i == cut:
                x = subsample(x, self.strides)
        return x

    def compute_output_shape(self, input_shape):
        h, w = (torch_output_size(size, 3, self.strides) for size in input_shape[1:3])
        return (input_shape[0], h, w, self.channels)

    def compute_madds(self, input_shape) -> int:
        total, shape, cut = 0, tuple(input_shape), self._subsampled_after()
        for i, layer in enumerate(self.steps):
            total += count_madds(layer, shape)
            shape = tuple(layer.compute_output_shape(shape))
            if i == cut:
                shape = (shape[0], *(torch_output_size(d, 1, 2) for d in shape[1:3]), shape[3])
        return total

    def get_config(self):
        return {**super().get_config(), "op": self.op, "channels": self.channels, "strides": self.strides}


@keras.saving.register_keras_serializable(package=PACKAGE)
class RouterNet(keras.layers.Layer):
    """The hypernetwork of a cell (DRNets §3.2, eq. 3): branch-importance logits for every connection.

    ``W = Affine(GAP(Block₂(Block₁(x₀ + x₁))))``, each block a pointwise convolution (to ``width_multiplier``
    · C channels) → BN → ReLU → depthwise 5×5 stride-2 convolution → BN → ReLU. The paper names the pw and
    dw convolutions; the fusion of x₀ and x₁ (a sum), the width (2C) and the norm layers are our choice
    (open in §3.2): with them the RouterNets of DRNet(S/M/L) hold 0.09 / 0.29 / 0.64 M parameters, the
    0.09 / 0.30 / 0.72 M that the paper's all-branch totals leave for them.

    Inputs: ``[x0, x1]``, each (B, H, W, C). Output: logits (B, ``connections``, ``num_ops``).

    Args:
        connections: connections of the cell (n·N = 8 in the paper).
        num_ops: candidate branches per connection (B+1 = 5).
        blocks: convolutional blocks (2).
        kernel_size: depthwise kernel of each block (5).
        width_multiplier: channels of the blocks, as a multiple of C (2).
    """

    def __init__(
        self,
        connections: int = 8,
        num_ops: int = 5,
        blocks: int = 2,
        kernel_size: int = 5,
        width_multiplier: int = 2,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.connections = check_int("connections", connections)
        self.num_ops = check_int("num_ops", num_ops)
        self.blocks = check_int("blocks", blocks)
        self.kernel_size = check_int("kernel_size", kernel_size)
        self.width_multiplier = check_int("width_multiplier", width_multiplier)

    def build(self, input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) != 2
            or not isinstance(input_shape[0], (list, tuple))
        ):
            raise ValueError(f"RouterNet takes the two cell inputs [x0, x1], got input shape {input_shape}.")
        if tuple(input_shape[0][1:]) != tuple(input_shape[1][1:]):
            raise ValueError(f"RouterNet: x0 and x1 must have the same shape, got {input_shape}.")
        channels = channels_of(input_shape[0], "RouterNet")
        width = self.width_multiplier * channels
        self.steps = []
        for _ in range(self.blocks):
            self.steps += [
                keras.layers.Conv2D(width, 1, use_bias=False, kernel_initializer=conv_initializer()),
                batchnorm(),
                keras.layers.ReLU(),
                SymmetricDepthwiseConv2D(self.kernel_size, 2, use_bias=False, depthwise_initializer=conv_initializer()),
                batchnorm(),
                keras.layers.ReLU(),
            ]
        self.steps += [
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(self.connections * self.num_ops, kernel_initializer=dense_initializer()),
        ]
        shape = tuple(input_shape[0])
        for layer in self.steps:
            layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))

    def call(self, inputs, training=None):
        x = inputs[0] + inputs[1]
        for layer in self.steps:
            x = layer(x, training=training)
        return ops.reshape(x, (-1, self.connections, self.num_ops))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.connections, self.num_ops)

    def compute_madds(self, input_shape) -> int:
        shape, total = tuple(input_shape[0]), 0
        for layer in self.steps:
            total += count_madds(layer, shape)
            shape = tuple(layer.compute_output_shape(shape))
        return total

    def get_config(self):
        return {
            **super().get_config(),
            "connections": self.connections,
            "num_ops": self.num_ops,
            "blocks": self.blocks,
            "kernel_size": self.kernel_size,
            "width_multiplier": self.width_multiplier,
        }


class GumbelTemperatureSchedule(keras.callbacks.Callback):
    """The paper's temperature schedule for the Gumbel-softmax of every routed layer (DRNets §4.2).

    Stage 1: τ = ``initial`` for the first ``hold_epochs`` epochs. Stage 2: τ restarts at ``restart`` and is
    multiplied by ``decay`` every epoch, never below ``floor``. CIFAR-10: 3 → (1, ×e^−0.0006, floor 0.5);
    ImageNet: 5 → floor 0.8. The layers changed are those with a ``temperature`` variable and a
    ``routing_weights`` output (DRNet cells); the value reached is the one inference and export use.

    Args:
        initial: τ of stage 1 (> 0).
        hold_epochs: length of stage 1 in epochs (≥ 0).
        restart: τ at the first epoch of stage 2 (> 0).
        decay: per-epoch factor of stage 2, in (0, 1].
        floor: the lowest τ (> 0).
    """

    def __init__(
        self,
        initial: float = 3.0,
        hold_epochs: int = 0,
        restart: float = 1.0,
        decay: float = math.exp(-0.0006),
        floor: float = 0.5,
    ):
        super().__init__()
        for name, value in (("initial", initial), ("restart", restart), ("floor", floor)):
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"`{name}` must be > 0, got {value!r}.")
        if not (isinstance(decay, (int, float)) and 0 < decay <= 1):
            raise ValueError(f"`decay` must be in (0, 1], got {decay!r}.")
        self.initial, self.restart, self.decay, self.floor = float(initial), float(restart), float(decay), float(floor)
        self.hold_epochs = check_int("hold_epochs", hold_epochs, minimum=0)

    def value(self, epoch: int) -> float:
        if epoch < self.hold_epochs:
            return self.initial
        return max(self.restart * self.decay ** (epoch - self.hold_epochs), self.floor)

    def on_epoch_begin(self, epoch, logs=None):
        tau = self.value(epoch)
        for layer in routed_layers(self.model):
            layer.temperature.assign(tau)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["temperature"] = self.value(epoch)


def routed_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of ``model`` (nested ones too) that routes between branches."""
    return [
        layer
        for layer in all_layers(model, include_self=False, recursive=True)
        if hasattr(layer, "temperature") and hasattr(layer, "threshold") and hasattr(layer, "branch_madds")
    ]


def set_routing(model: keras.Model, threshold: float | None = None, temperature: float | None = None) -> None:
    """Set the inference threshold T (in (0, 1]; 1 computes every branch) and/or the temperature τ of
    every routed layer of ``model``."""
    layers = routed_layers(model)
    if not layers:
        raise ValueError(f"`model` {model.name!r} has no routed layers.")
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
        raise ValueError(f"`threshold` must be in (0, 1], got {threshold!r}.")
    if temperature is not None and not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"`temperature` must be > 0, got {temperature!r}.")
    for layer in layers:
        if threshold is not None:
            layer.threshold.assign(float(threshold))
        if temperature is not None:
            layer.temperature.assign(float(temperature))


def check_ops(ops_: Sequence[str]) -> tuple[str, ...]:
    """A tuple of distinct candidate-op names, or a ValueError listing the allowed names."""
    ops_ = tuple(ops_)
    if not ops_ or len(set(ops_)) != len(ops_):
        raise ValueError(f"`ops` must be distinct names from {list(CANDIDATE_OPS)}, got {list(ops_)}.")
    for op in ops_:
        check_choice("ops", op, CANDIDATE_OPS)
    return ops_
