"""Context-aware Dynamic Block (CDB: Su et al., SenseTime): a residual block split into N parallel
channel groups that a small recurrent controller switches on or off per sample.

``X_l = S(X_{l−1}) + Σ_n s_{l,n} · F_{l,n}(X_{l−1})``, ``s_{l,n} ∈ {0, 1}`` (paper eq. 3). Three layers:

* :class:`ContextAwareGroupController` — the embedding of the block input plus the hidden state of the
  previous block's controller (eqs. 4–6) and the gate logits ``g_l = W3 h_l + b3`` (§3.3).
* :class:`GroupGate` — on/off decisions from the logits: Gaussian noise and a straight-through argmax in
  training (eq. 9), a plain comparison at inference.
* :class:`CDBBlock` — the gated block; at inference a group that no sample of the batch switches on is not
  computed (one ``cond`` per group, a TFLite ``IF``).

Paper: Y. Su, S. Zhou, Y. Wu, X. Liu, T. Su, D. Liang, J. Yan (SenseTime Research), "Context-aware Dynamic
Block"; the copy we work from names no venue and no arXiv identifier.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from dynzoo.layers.base import (
    PACKAGE,
    SequenceBlock,
    batchnorm,
    channels_of,
    check_choice,
    check_int,
    conv_initializer,
    count_madds,
)
from dynzoo.layers.conv import SymmetricConv2D, torch_output_size

BLOCK_KINDS = ("basic", "bottleneck")


def _split_inputs(inputs):
    """(x, h_prev or None) from a block's or controller's input: ``x`` or ``[x, h_prev]``."""
    if isinstance(inputs, (list, tuple)):
        if len(inputs) != 2:
            raise ValueError(f"expected `x` or `[x, h_prev]`, got {len(inputs)} inputs.")
        return inputs[0], inputs[1]
    return inputs, None


def _check_input_shapes(input_shape, hidden: int, layer: str):
    """The feature-map shape, after checking the optional hidden-state shape; returns (x_shape, history)."""
    if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
        if len(input_shape) != 2:
            raise ValueError(f"{layer} takes `x` or `[x, h_prev]`, got {len(input_shape)} inputs.")
        x_shape, h_shape = tuple(input_shape[0]), tuple(input_shape[1])
        if len(h_shape) != 2 or h_shape[-1] != hidden:
            raise ValueError(f"{layer}: `h_prev` must have shape (batch, {hidden}) (`hidden`={hidden}), got {h_shape}.")
        history = True
    else:
        x_shape, history = tuple(input_shape), False
    if len(x_shape) != 4:
        raise ValueError(f"{layer}: `x` must be a (batch, height, width, channels) feature map, got {x_shape}.")
    channels_of(x_shape, layer)
    return x_shape, history


@keras.saving.register_keras_serializable(package=PACKAGE)
class ContextAwareGroupController(keras.layers.Layer):
    """The context-aware group controller of a CDB block (CDB §3.2.1, eqs. 4–6; §3.3).

    ``z = GAP(X_{l−1})`` (eq. 4), ``V = ReLU(W1 z + b1)`` (eq. 5), ``h_l = V + ReLU(W2 h_{l−1} + b2)``
    (eq. 6; the history term is left out for the first block, whose h_0 is zero, so h_1 = V), and the gate
    logits ``g_l = W3 h_l + b3`` reshaped to (N, 2), index 1 = "on". The hidden state is passed to the next
    block's controller in the same forward pass (through every stage: d is constant); nothing persists
    between inputs. W2 is per block.

    Inputs: ``x`` (B, H, W, C_in) for the first block, else ``[x, h_prev (B, d)]``.
    Outputs: ``[logits (B, N, 2), h (B, d)]``.

    Args:
        groups: N, the number of channel groups (≥ 1).
        hidden: d, the controller width (the paper uses 32 throughout).
        on_bias: initial bias of the "on" logit, so that early training sees most groups on (the paper gives
            no initialisation; +1 → P(on) ≈ 0.76 under N(0, 1) noise on both logits).
    """

    def __init__(self, groups: int, hidden: int = 32, on_bias: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.groups = check_int("groups", groups)
        self.hidden = check_int("hidden", hidden)
        if not isinstance(on_bias, (int, float)) or isinstance(on_bias, bool):
            raise ValueError(f"`on_bias` must be a number, got {on_bias!r}.")  # noqa: TRY004 (the project raises ValueError)
        self.on_bias = float(on_bias)
        self.embed = keras.layers.Dense(self.hidden, activation="relu", name="embed")  # W1
        self.history = keras.layers.Dense(self.hidden, activation="relu", name="history")  # W2
        bias = [0.0, self.on_bias] * self.groups
        self.logits_fc = keras.layers.Dense(
            2 * self.groups, bias_initializer=keras.initializers.Constant(bias), name="logits_fc"
        )  # W3

    def build(self, input_shape):
        x_shape, self.uses_history = _check_input_shapes(input_shape, self.hidden, "ContextAwareGroupController")
        self.embed.build((x_shape[0], x_shape[-1]))
        if self.uses_history:
            self.history.build((x_shape[0], self.hidden))
        self.logits_fc.build((x_shape[0], self.hidden))

    def call(self, inputs):
        x, h_prev = _split_inputs(inputs)
        h = self.embed(ops.mean(x, axis=(1, 2)))
        if h_prev is not None:
            h = h + self.history(h_prev)
        logits = ops.reshape(self.logits_fc(h), (-1, self.groups, 2))
        return [logits, h]

    def compute_output_shape(self, input_shape):
        x_shape, _ = _check_input_shapes(input_shape, self.hidden, "ContextAwareGroupController")
        return [(x_shape[0], self.groups, 2), (x_shape[0], self.hidden)]

    def compute_madds(self, input_shape) -> int:
        x_shape, history = _check_input_shapes(input_shape, self.hidden, "ContextAwareGroupController")
        d = self.hidden
        return x_shape[-1] * d + (d * d if history else 0) + d * 2 * self.groups

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "hidden": self.hidden, "on_bias": self.on_bias}


@keras.saving.register_keras_serializable(package=PACKAGE)
class GroupGate(keras.layers.Layer):
    """On/off decisions of the channel groups from the controller's logits (CDB §3.3, eq. 9).

    Training: ``s = argmax(softmax(g + Δ))``, Δ ~ N(0, ``noise_stddev``²) i.i.d. per logit. The argmax has
    no gradient; we use the straight-through estimator ``s = y_hard + (y_soft − stop_gradient(y_soft))`` with
    ``y_soft = softmax(g + Δ)``: the forward pass uses exactly the hard 0/1 gates the network will execute
    (so the FLOPs and execution-rate losses see the real cost of the batch), and the gradient of the
    softmax probability of "on" reaches the controller. (The paper does not state its estimator; ConvNet-
    AIG, its main comparison, uses the same straight-through trick with Gumbel noise.)
    Inference: no noise, ``s = 1[g_on > g_off]`` — deterministic, builtin TFLite ops only.

    Input: logits (B, N, 2), index 1 = "on". Output: s (B, N), 0/1 floats (with the straight-through
    gradient in training).

    Args:
        noise_stddev: standard deviation of the Gaussian noise in training (the paper: 1; 0 = none).
        seed: seed of the noise.
    """

    def __init__(self, noise_stddev: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(noise_stddev, bool) or not isinstance(noise_stddev, (int, float)) or noise_stddev < 0:
            raise ValueError(f"`noise_stddev` must be a number >= 0, got {noise_stddev!r}.")
        self.noise_stddev = float(noise_stddev)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] != 2:
            raise ValueError(f"GroupGate takes logits of shape (batch, groups, 2), got {tuple(input_shape)}.")

    def call(self, logits, training=None):
        if not training:
            return ops.cast(ops.greater(logits[..., 1], logits[..., 0]), logits.dtype)
        if self.noise_stddev:
            logits = logits + self.noise_stddev * keras.random.normal(ops.shape(logits), seed=self.seed_generator)
        soft = ops.softmax(logits, axis=-1)[..., 1]
        hard = ops.cast(ops.greater(logits[..., 1], logits[..., 0]), logits.dtype)
        return hard + (soft - ops.stop_gradient(soft))  # exactly 0/1 forward, the softmax's gradient backward

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])

    def get_config(self):
        return {**super().get_config(), "noise_stddev": self.noise_stddev, "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class GroupBranch(SequenceBlock):
    """One channel group F_{l,n} of a CDB block: a narrow ResNet residual function (CDB Table 1).

    ``bottleneck``: conv1×1 (C_in → w) + BN + ReLU → conv3×3 (w → w, stride s) + BN + ReLU → conv1×1
    (w → C_out) + BN. ``basic``: conv3×3 (C_in → w, stride s) + BN + ReLU → conv3×3 (w → C_out) + BN.
    Stride on the 3×3 (PyTorch style), symmetric padding.

    Input/output: (B, H, W, C_in) → (B, ⌈H/s⌉, ⌈W/s⌉, C_out).

    Args:
        kind: "basic" or "bottleneck".
        width: w, the group's inner width.
        out_channels: C_out.
        strides: 1 or 2.
    """

    def __init__(self, kind: str, width: int, out_channels: int, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.kind = check_choice("kind", kind, BLOCK_KINDS)
        self.width = check_int("width", width)
        self.out_channels = check_int("out_channels", out_channels)
        self.strides = check_choice("strides", strides, (1, 2))

    def make_steps(self, in_channels: int):
        def conv(filters, kernel, strides, name):
            return SymmetricConv2D(
                filters, kernel, strides, use_bias=False, kernel_initializer=conv_initializer(), name=name
            )

        w, s = self.width, self.strides
        if self.kind == "bottleneck":
            specs = [(w, 1, 1), (w, 3, s), (self.out_channels, 1, 1)]
        else:
            specs = [(w, 3, s), (self.out_channels, 3, 1)]
        steps = []
        for n, (filters, kernel, strides) in enumerate(specs, 1):
            steps += [(f"conv{n}", conv(filters, kernel, strides, f"conv{n}")), (f"bn{n}", batchnorm(f"bn{n}"))]
            if n < len(specs):
                steps.append((None, keras.layers.ReLU(name=f"relu{n}")))
        return steps

    def get_config(self):
        return {
            **super().get_config(),
            "kind": self.kind,
            "width": self.width,
            "out_channels": self.out_channels,
            "strides": self.strides,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class CDBBlock(keras.layers.Layer):
    """A Context-aware Dynamic Block (CDB §3.1, eq. 3; Table 1).

    ``y = ReLU(S(x) + Σ_{n=1..N} s_n · F_n(x))``: S is the identity, or conv1×1 (stride s) + BN when the
    shape changes; F_n are N independent narrow residual functions (:class:`GroupBranch`, ResNeXt-like
    split whose widths keep the block's parameters and FLOPs close to the original, Table 1); the gates
    s (B, N) come from a :class:`ContextAwareGroupController` on the block input and the previous block's
    hidden state, through a :class:`GroupGate`.

    Training computes every group and multiplies by the (straight-through) gates. Inference with
    ``conditional`` wraps each group in a ``cond``: a group that no sample of the batch switches on is not
    computed at all (at batch 1: exactly the selected groups run), the others are masked per sample — the
    output equals the masked sum up to float rounding. In TFLite each ``cond`` becomes a builtin ``IF``.

    Inputs: ``x`` (B, H, W, C_in) for the first block, else ``[x, h_prev (B, hidden)]``.
    Outputs: ``[y (B, ⌈H/s⌉, ⌈W/s⌉, C_out), h (B, hidden), gates (B, N)]`` — the gates are the executed
    0/1 decisions (inspectable; the effective FLOPs follow from them).

    Args:
        kind: "basic" or "bottleneck" (the residual function of each group).
        width: w, the inner width of each group.
        out_channels: C_out.
        groups: N ≥ 1.
        strides: 1 or 2 (on the 3×3 conv).
        hidden: d of the controller (32 in the paper).
        noise_stddev: σ of the gate noise in training (1 in the paper).
        on_bias: initial bias of the controller's "on" logits.
        conditional: skip the switched-off groups at inference (False: compute all, mask by 0).
        seed: seed of the gate noise.
    """

    def __init__(
        self,
        kind: str,
        width: int,
        out_channels: int,
        groups: int = 2,
        strides: int = 1,
        hidden: int = 32,
        noise_stddev: float = 1.0,
        on_bias: float = 1.0,
        conditional: bool = True,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.kind = check_choice("kind", kind, BLOCK_KINDS)
        self.width = check_int("width", width)
        self.out_channels = check_int("out_channels", out_channels)
        self.groups = check_int("groups", groups)
        self.strides = check_choice("strides", strides, (1, 2))
        self.hidden = check_int("hidden", hidden)
        self.conditional = bool(conditional)
        self.seed = seed
        self.controller = ContextAwareGroupController(self.groups, self.hidden, on_bias, name="controller")
        self.gate = GroupGate(noise_stddev, seed, name="gate")
        self.branches = [
            GroupBranch(self.kind, self.width, self.out_channels, self.strides, name=f"group{n}")
            for n in range(self.groups)
        ]

    def build(self, input_shape):
        x_shape, _ = _check_input_shapes(input_shape, self.hidden, "CDBBlock")
        self.controller.build(input_shape)
        self.gate.build((x_shape[0], self.groups, 2))
        for branch in self.branches:
            branch.build(x_shape)
        self.shortcut = None
        if self.strides != 1 or x_shape[-1] != self.out_channels:
            self.shortcut = [
                keras.layers.Conv2D(
                    self.out_channels,
                    1,
                    strides=self.strides,
                    use_bias=False,
                    kernel_initializer=conv_initializer(),
                    name="shortcut_conv",
                ),
                batchnorm("shortcut_bn"),
            ]
            self.shortcut[0].build(x_shape)
            self.shortcut[1].build(self._output_shape(x_shape))

    def _output_shape(self, x_shape):
        h, w = (torch_output_size(n, 3, self.strides) for n in x_shape[1:3])
        return (x_shape[0], h, w, self.out_channels)

    def call(self, inputs, training=None):
        x, _ = _split_inputs(inputs)
        logits, h = self.controller(inputs)
        gates = self.gate(logits, training=training)
        y = x if self.shortcut is None else self.shortcut[1](self.shortcut[0](x), training=training)
        skip_off = self.conditional and not training
        for n, branch in enumerate(self.branches):
            scale = ops.reshape(gates[:, n], (-1, 1, 1, 1))
            if skip_off:
                y = ops.cond(
                    ops.any(ops.greater(gates[:, n], 0.0)),
                    lambda y=y, branch=branch, scale=scale: y + scale * branch(x, training=False),
                    lambda y=y: y,
                )
            else:
                y = y + scale * branch(x, training=training)
        return [ops.relu(y), h, gates]

    def compute_output_shape(self, input_shape):
        x_shape, _ = _check_input_shapes(input_shape, self.hidden, "CDBBlock")
        return [self._output_shape(x_shape), (x_shape[0], self.hidden), (x_shape[0], self.groups)]

    def group_madds(self, input_shape) -> int:
        """MAdds of one group F_n for one sample (every group costs the same)."""
        x_shape, _ = _check_input_shapes(input_shape, self.hidden, "CDBBlock")
        if not self.built:
            self.build(input_shape)
        return count_madds(self.branches[0], x_shape)

    def static_madds(self, input_shape) -> int:
        """MAdds spent whatever the gates: the controller and the projection shortcut."""
        x_shape, _ = _check_input_shapes(input_shape, self.hidden, "CDBBlock")
        if not self.built:
            self.build(input_shape)
        shortcut = count_madds(self.shortcut[0], x_shape) if self.shortcut else 0
        return self.controller.compute_madds(input_shape) + shortcut

    def compute_madds(self, input_shape) -> int:
        """MAdds with every group on (the profiler's convention; see ``effective`` counts in the models)."""
        return self.static_madds(input_shape) + self.groups * self.group_madds(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "kind": self.kind,
            "width": self.width,
            "out_channels": self.out_channels,
            "groups": self.groups,
            "strides": self.strides,
            "hidden": self.hidden,
            "noise_stddev": self.gate.noise_stddev,
            "on_bias": self.controller.on_bias,
            "conditional": self.conditional,
            "seed": self.seed,
        }


def group_width(kind: str, base_width: int, out_channels: int, in_channels: int, groups: int) -> int:
    """The group width that keeps a non-first block's parameters equal to the single-group block's.

    Bottleneck: solve ``N·(2·C·w + 9w²) = 2·C·w₀ + 9w₀²`` (C = in = out channels); basic: ``w = w₀ / N``.
    Used for N the paper's Table 1 does not list (the configuration gives the printed widths).
    """
    check_choice("kind", kind, BLOCK_KINDS)
    groups = check_int("groups", groups)
    if kind == "basic":
        return max(1, round(base_width / groups))
    c = out_channels
    target = (in_channels + c) * base_width + 9 * base_width**2
    a, b = 9 * groups, (in_channels + c) * groups
    return max(1, round((-b + math.sqrt(b * b + 4 * a * target)) / (2 * a)))
