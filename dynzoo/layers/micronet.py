"""MicroNet operators (thesis ch. 4): Micro-Factorized convolutions, the stem and the Micro-Blocks.

The blocks follow the official code's module order (``DYMicroBlock``), which is what the released weights
need: a code block is "expand GC → DW → squeeze GC" in inverted-residual style, offset by half a block
from the text's Micro-Blocks A/B/C (thesis Table 4.1 and §4.4.1).

Paper: Y. Li et al., "MicroNet: Improving Image Recognition with Extremely Low FLOPs", ICCV 2021,
https://arxiv.org/abs/2108.05894;
chapter 4 of Y. Li, "Dynamic Neural Networks for Resource Constrained Image Recognition", PhD thesis,
UC San Diego, 2021.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from dynzoo.layers.base import (
    PACKAGE,
    SequenceBlock,
    batchnorm,
    bn_affine,
    check_choice,
    check_divisible,
    check_int,
    check_pair,
    conv_initializer,
    in_export_form,
    in_integer_export_form,
)
from dynzoo.layers.conv import SymmetricConv2D, SymmetricDepthwiseConv2D
from dynzoo.layers.shift_max import DynamicShiftMax
from dynzoo.layers.shuffle import PERMUTATION_MAX_CHANNELS, ChannelShuffle, gathered


@keras.saving.register_keras_serializable(package=PACKAGE)
class GroupPointwiseConv(SequenceBlock):
    """Group-adaptive 1×1 convolution followed by BatchNorm: one half of the Micro-Factorized
    pointwise convolution (thesis §4.2.1; official ``GroupConv`` + BN).

    Args:
        filters: output channels; must be divisible by ``groups``.
        groups: number of groups; must divide the input channels too.

    Input/output: (B, H, W, C_in) → (B, H, W, filters).
    """

    def __init__(self, filters: int, groups: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_int("filters", filters)
        self.groups = check_int("groups", groups)
        check_divisible("filters", self.filters, self.groups, "groups")

    def make_steps(self, in_channels):
        check_divisible("input channels", in_channels, self.groups, "groups")
        conv = SymmetricConv2D(
            self.filters, 1, groups=self.groups, use_bias=False, kernel_initializer=conv_initializer()
        )  # trains as one or G matrix products
        return [("conv.0", conv), ("conv.1", batchnorm())]

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "groups": self.groups}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MicroFactorizedPointwise(SequenceBlock):
    """Micro-Factorized pointwise convolution ``W = P Φ Qᵀ`` (thesis §4.2.1, eq. 4.1).

    Q: group 1×1 conv C_in → ``hidden`` with ``groups[0]`` groups (+BN); Φ: channel shuffle;
    P: group 1×1 conv ``hidden`` → ``filters`` with ``groups[1]`` groups (+BN), then a shuffle.
    Eq. 4.3 picks ``groups[0]·groups[1] = hidden`` so that every output reaches every input once.

    Args:
        filters: output channels C.
        hidden: C/R, the compressed width.
        groups: (G1, G2); ``None`` uses the rule of eq. 4.3 (G = √(C/R), or the nearest factor pair).
    """

    def __init__(self, filters: int, hidden: int, groups: Sequence[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_int("filters", filters)
        self.hidden = check_int("hidden", hidden)
        self.groups = list(check_pair("groups", groups) if groups is not None else factor_pair(hidden))

    def make_steps(self, in_channels):
        g1, g2 = self.groups
        return [
            ("0", GroupPointwiseConv(self.hidden, g1)),
            (None, ChannelShuffle(g1)),
            ("1", GroupPointwiseConv(self.filters, g2)),
            (None, ChannelShuffle(g2)),
        ]

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "hidden": self.hidden, "groups": self.groups}


def factor_pair(n: int) -> tuple[int, int]:
    """The factor pair (a, b), a ≤ b, a·b = n, closest to (√n, √n) (eq. 4.3 for a non-square C/R)."""
    a = int(n**0.5)
    while n % a:
        a -= 1
    return a, n // a


def column_bias(taps, width: int, strides: int):
    """(output columns, C): for each output column of a 1×k convolution with stride ``strides`` and
    symmetric zero padding k // 2 over ``width`` input columns, the sum of ``taps`` (k, C) over the taps
    that read inside the input: the bias that a constant added before that convolution becomes after it
    (the taps that read the padding see zeros instead)."""
    k = taps.shape[0]
    out_width = (width + 2 * (k // 2) - k) // strides + 1
    column = np.arange(out_width)[:, None] * strides - k // 2 + np.arange(k)[None, :]
    inside = ((column >= 0) & (column < width)).astype("float32")
    return ops.matmul(ops.convert_to_tensor(inside), taps)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MicroFactorizedDepthwise(SequenceBlock):
    """Micro-Factorized depthwise convolution (thesis §4.2.2): a k×1 depthwise conv (stride (s, 1),
    channel multiplier e1) + BN, then a 1×k depthwise conv (stride (1, s), multiplier e2) + BN, no
    activation in between. Cost O(k·C) instead of O(k²·C); with e1·e2 > 1 it is the expanding half of
    the lite combination (§4.2.3). Exported, it runs as one k×k depthwise convolution (:meth:`folded`).

    Args:
        kernel_size: k (odd).
        strides: s.
        expansion: (e1, e2) channel multipliers.

    Input/output: (B, H, W, C) → (B, ⌈H/s⌉, ⌈W/s⌉, C·e1·e2).
    """

    def __init__(self, kernel_size: int, strides: int = 1, expansion: Sequence[int] = (1, 1), **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = check_int("kernel_size", kernel_size)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd, got {kernel_size}.")
        self.strides = check_int("strides", strides)
        self.expansion = list(check_pair("expansion", expansion))

    def make_steps(self, in_channels):
        k, s = self.kernel_size, self.strides
        e1, e2 = self.expansion
        init = conv_initializer()
        return [
            (
                "conv.0",
                SymmetricDepthwiseConv2D(
                    (k, 1), (s, 1), depth_multiplier=e1, use_bias=False, depthwise_initializer=init
                ),
            ),
            ("conv.1", batchnorm()),
            (
                "conv.2",
                SymmetricDepthwiseConv2D(
                    (1, k), (1, s), depth_multiplier=e2, use_bias=False, depthwise_initializer=init
                ),
            ),
            ("conv.3", batchnorm()),
        ]

    integer_export_form = True  # int8 repeats the input channels of a multiplier (base.has_integer_export_form)

    def call(self, inputs, training=None):
        if training or not in_export_form() or inputs.shape[2] is None:
            return super().call(inputs, training=training)
        return self.folded(inputs)

    def folded(self, inputs):
        """The export form: one k×k depthwise convolution with equal strides (s, s) and multiplier e1·e2
        (TFLite DEPTHWISE_CONV_2D) instead of two half-kernel convolutions with unequal strides, which
        export as grouped CONV_2Ds with a PAD each and a full-height intermediate. Everything is linear,
        so the kernels and BN scales compose into rank-1 k×k kernels; BN1's shift passes through the
        second conv as a constant, except where that conv's taps read its zero padding, which a
        per-column bias puts right (:func:`column_bias`). Needs a known input width."""
        first, bn1, second, bn2 = self.steps
        k, s, (e1, e2) = self.kernel_size, self.strides, self.expansion
        channels = inputs.shape[-1]
        s1, t1 = bn_affine(bn1)
        s2, t2 = bn_affine(bn2)
        rows = ops.reshape(first.kernel, (k, 1, channels * e1, 1)) * ops.reshape(s1, (1, 1, -1, 1))
        columns = ops.reshape(second.kernel, (1, k, channels * e1, e2))
        kernel = ops.reshape(rows * columns, (k, k, channels, e1 * e2)) * ops.reshape(s2, (channels, e1 * e2))
        taps = ops.reshape(ops.expand_dims(t1, -1) * columns[0], (k, -1)) * s2  # BN1's shift through each tap
        bias = column_bias(taps, inputs.shape[2], s) + t2
        x = inputs
        if in_integer_export_form() and e1 * e2 > 1 and channels * e1 * e2 <= PERMUTATION_MAX_CHANNELS:
            # each input channel repeated e1·e2 times, then a depthwise conv without multiplier: with XNNPACK's
            # int8 multiplier kernels MicroNet-M0 ran 1.10× slower (benchmarks/deploy_latency.py)
            x = gathered(x, np.repeat(np.arange(channels), e1 * e2))
            kernel = ops.reshape(kernel, (k, k, channels * e1 * e2, 1))
        x = ops.pad(x, [[0, 0], [k // 2, k // 2], [k // 2, k // 2], [0, 0]])
        y = ops.depthwise_conv(x, kernel, strides=s, padding="valid")
        return y + ops.reshape(bias, (1, 1, -1, channels * e1 * e2))

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "expansion": self.expansion,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class MicroStem(SequenceBlock):
    """MicroNet stem (official ``spatialsepsf``): Conv 3×1 (3 → g1, stride (2, 1)) + BN, depthwise 1×3
    (multiplier g2, stride (1, 2)) + BN, channel shuffle (g1), ReLU6. Output: g1·g2 channels at half
    resolution.

    Args:
        groups: (g1, g2).
    """

    def __init__(self, groups: Sequence[int] = (2, 2), **kwargs):
        super().__init__(**kwargs)
        self.groups = list(check_pair("groups", groups))

    def make_steps(self, in_channels):
        g1, g2 = self.groups
        init = conv_initializer()
        return [
            ("stem.0.conv.0", SymmetricConv2D(g1, (3, 1), (2, 1), use_bias=False, kernel_initializer=init)),
            ("stem.0.conv.1", batchnorm()),
            (
                "stem.0.conv.2",
                SymmetricDepthwiseConv2D(
                    (1, 3), (1, 2), depth_multiplier=g2, use_bias=False, depthwise_initializer=init
                ),
            ),
            ("stem.0.conv.3", batchnorm()),
            (None, ChannelShuffle(g1)),
            (None, keras.layers.ReLU(6.0)),
        ]

    def call(self, inputs, training=None):
        if training or inputs.shape[2] is None:
            return super().call(inputs, training=training)
        return self.folded(inputs)

    def folded(self, inputs):
        """Inference as one 3×3 stride-2 convolution: everything before the ReLU6 is linear (3×1 conv, BN,
        1×3 depthwise, BN, shuffle), so the kernels and both BatchNorms compose into one kernel with the
        shuffle as its output-channel order. Exact but for one thing, which a per-column bias puts right:
        in the first output column (and the last, for an odd width) the depthwise conv's outer tap reads
        the intermediate's zero padding, where the composed kernel would read BN1's shift
        (:func:`column_bias`). Exported: PAD, CONV_2D and ADD + ReLU6 instead of two padded convolutions, a
        full-width intermediate and a shuffle (needs a known input width; otherwise the layers run one by
        one)."""
        conv, bn1, depthwise, bn2, shuffle, _ = self.steps
        g1, g2 = self.groups
        s1, t1 = bn_affine(bn1)
        s2, t2 = bn_affine(bn2)
        first = conv.kernel[:, 0] * s1  # (3 rows, C_in, g1)
        second = depthwise.kernel[0]  # (3 columns, g1, g2): output channel c·g2 + m
        kernel = ops.reshape(ops.einsum("yic,xcm->yxicm", first, second), (3, 3, -1, g1 * g2)) * s2
        taps = ops.reshape(ops.expand_dims(t1, -1) * second, (3, g1 * g2)) * s2  # BN1's shift through each tap
        order = shuffle.permutation
        kernel, taps, t2 = (ops.take(v, order, axis=-1) for v in (kernel, taps, t2))
        bias = column_bias(taps, inputs.shape[2], 2) + t2
        x = ops.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]])
        y = ops.conv(x, kernel, strides=2, padding="valid")
        return ops.relu6(y + ops.reshape(bias, (1, 1, -1, g1 * g2)))

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


BLOCK_TYPES = ("A", "BC", "final")


@keras.saving.register_keras_serializable(package=PACKAGE)
class MicroBlock(SequenceBlock):
    """One block of the official MicroNet code (``DYMicroBlock``), with the activation flags of its
    configuration row. Three kinds (the code's, not the text's A/B/C):

    * ``"A"`` — Micro-Block-A, the lite combination: MF-DW expanding by e1·e2 → act(y2) → shuffle →
      group 1×1 squeeze to ``filters`` → act(y3) → shuffle.
    * ``"BC"`` — inverted residual: group 1×1 expand (×e1·e2) → act(y1) → shuffle → MF-DW → act(y2)
      → shuffle → group 1×1 squeeze → act(y3) → shuffle. The text's Micro-Blocks B/C are the tail of
      one such block plus the expand conv of the next.
    * ``"final"`` — the last 1×1: group 1×1 expand to ``filters`` → act(y3).

    Activation flags: y1/y2 = 2 → Dynamic Shift-Max with K = 2, 1 → K = 1, 0 → ReLU6; y3 > 0 →
    Dynamic Shift-Max with K = 1 (offsets ``init_a_out``), 0 → none. The identity skip is added after the
    last shuffle when the stride is 1 and the channel count is unchanged.

    Args:
        block_type: "A", "BC" or "final".
        filters: output channels.
        kernel_size, strides: of the MF-DW.
        expansion: (e1, e2).
        expand_groups: (g1, g2): groups of the expand conv and of the shuffle after it (A: g2 only).
        squeeze_groups: (g3, g4): groups of the squeeze conv and of its shuffle.
        activations: (y1, y2, y3).
        reduction: Dynamic Shift-Max reduction of y1/y2 and of the final block's y3 (y3 of A/BC
            blocks uses half of it).
        init_a, init_b: Dynamic Shift-Max offsets of the K = 2 layers; ``init_a_out`` of the y3 layers.
    """

    def __init__(
        self,
        block_type: str,
        filters: int,
        kernel_size: int = 3,
        strides: int = 1,
        expansion: Sequence[int] = (1, 1),
        expand_groups: Sequence[int] = (1, 1),
        squeeze_groups: Sequence[int] = (1, 1),
        activations: Sequence[int] = (2, 2, 1),
        reduction: int = 8,
        init_a: Sequence[float] = (1.0, 1.0),
        init_b: Sequence[float] = (0.0, 0.0),
        init_a_out: Sequence[float] = (1.0, 0.0),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.block_type = check_choice("block_type", block_type, BLOCK_TYPES)
        self.filters = check_int("filters", filters)
        self.kernel_size = check_int("kernel_size", kernel_size)
        self.strides = check_int("strides", strides)
        self.expansion = list(check_pair("expansion", expansion))
        minimum = 0 if block_type == "A" else 1
        self.expand_groups = [check_int("expand_groups", g, minimum) for g in expand_groups]
        self.squeeze_groups = list(check_pair("squeeze_groups", squeeze_groups))
        if len(activations) != 3 or any(a not in (0, 1, 2) for a in activations):
            raise ValueError(f"`activations` must be three flags in {{0, 1, 2}}, got {activations!r}.")
        self.activations = list(activations)
        self.reduction = check_int("reduction", reduction)
        self.init_a, self.init_b, self.init_a_out = list(init_a), list(init_b), list(init_a_out)

    def _act(self, flag: int, shift_groups: int, reduction: int, out: bool = False):
        """The activation a flag selects (``None`` for y3 = 0)."""
        if out:
            if flag == 0:
                return None
            return DynamicShiftMax(1, reduction, shift_groups, self.init_a_out, self.init_b)
        if flag == 0:
            return keras.layers.ReLU(6.0)
        return DynamicShiftMax(flag, reduction, shift_groups, self.init_a, self.init_b)

    def make_steps(self, in_channels):
        e1, e2 = self.expansion
        hidden = in_channels * e1 * e2
        y1, y2, y3 = self.activations
        g1, g2 = self.expand_groups
        g3, g4 = self.squeeze_groups
        r = self.reduction
        steps: list = []

        def add(index, layer):
            # index: the module's position in the official ``layers`` Sequential
            if layer is not None:
                steps.append((f"layers.{index}", layer))

        if self.block_type == "final":
            if self.filters != hidden:
                raise ValueError(
                    f"a final MicroBlock outputs input·e1·e2 = {hidden} channels, but `filters` is {self.filters}."
                )
            add(0, GroupPointwiseConv(hidden, g1))
            add(1, self._act(y3, g2, r, out=True))
            return steps
        squeeze_shuffle = [g4] + ([self.filters // 2] if y3 and self.filters % 2 == 0 else [])
        if self.block_type == "A":
            add(0, MicroFactorizedDepthwise(self.kernel_size, self.strides, (e1, e2)))
            add(1, self._act(y2, g2, r))
            steps.append((None, ChannelShuffle([g2] + ([hidden // 2] if y2 else []))))
            add(4, GroupPointwiseConv(self.filters, g3))
            add(5, self._act(y3, g4, r // 2, out=True))
        else:
            add(0, GroupPointwiseConv(hidden, g1))
            add(1, self._act(y1, g2, r))
            steps.append((None, ChannelShuffle(g2)))
            add(3, MicroFactorizedDepthwise(self.kernel_size, self.strides))
            add(5, self._act(y2, hidden // g2 if g2 != 1 else g2, r))
            if y1 or y2:
                steps.append((None, ChannelShuffle(hidden // 4 if (y1 and y2) else hidden // 2)))
            add(7, GroupPointwiseConv(self.filters, g3))
            add(8, self._act(y3, g4, r // 2, out=True))
        steps.append((None, ChannelShuffle(squeeze_shuffle)))
        return steps

    def uses_residual(self, in_channels):
        return self.block_type != "final" and self.strides == 1 and in_channels == self.filters

    def get_config(self):
        return {
            **super().get_config(),
            "block_type": self.block_type,
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "expansion": self.expansion,
            "expand_groups": self.expand_groups,
            "squeeze_groups": self.squeeze_groups,
            "activations": self.activations,
            "reduction": self.reduction,
            "init_a": self.init_a,
            "init_b": self.init_b,
            "init_a_out": self.init_a_out,
        }
