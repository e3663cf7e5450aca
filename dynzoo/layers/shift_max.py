"""Dynamic Shift-Max (thesis §4.3), exactly as the official MicroNet code computes it."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import keras
from keras import ops

from dynzoo.layers.base import (
    PACKAGE,
    channels_of,
    check_choice,
    check_divisible,
    check_int,
    dense_initializer,
    quant_point,
)


def make_divisible(value: float, divisor: int = 4) -> int:
    """The official rounding of squeeze widths: nearest multiple of ``divisor``, at least ``divisor``,
    and never more than 10% below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def partner_indices(channels: int, groups: int) -> np.ndarray:
    """Channel ``g·gc + c`` is paired with ``((g+1) mod G)·gc + ((c+1) mod gc)``, gc = C/G: the official
    code shifts by one group *and* one channel inside the group (the text shifts by the group only)."""
    per_group = channels // groups
    g, c = np.divmod(np.arange(channels), per_group)
    return (((g + 1) % groups) * per_group + (c + 1) % per_group).astype("int32")


def _rotate(x, axis: int):
    """``x`` rotated by one step towards lower indices along ``axis`` (element i takes element i + 1)."""
    first = x[(slice(None),) * axis + (slice(0, 1),)]
    return ops.concatenate([x[(slice(None),) * axis + (slice(1, None),)], first], axis=axis)


def shift_to_partners(x, groups: int):
    """``x[..., partner_indices(C, groups)]`` written with static slices and concatenations (TFLite
    STRIDED_SLICE + CONCATENATION, which XNNPACK runs; a GATHER would not be delegated)."""
    channels = x.shape[-1]
    per_group = channels // groups
    if groups == 1 or per_group == 1:  # the partner is simply the next channel
        return _rotate(x, 3)
    shape = ops.shape(x)
    grid = ops.reshape(x, (-1, shape[1], shape[2], groups, per_group))
    return ops.reshape(_rotate(_rotate(grid, 3), 4), (-1, shape[1], shape[2], channels))


@keras.saving.register_keras_serializable(package=PACKAGE)
class DynamicShiftMax(keras.layers.Layer):
    """Dynamic Shift-Max activation (MicroNet, thesis §4.3, eq. 4.4, official-code form, J = 2).

    ``y = max_k ( a_k(x) ⊙ x + b_k(x) ⊙ x̂ )`` for k = 1…K, where ``x̂`` is ``x`` with its channels
    shifted by one group and one channel (:func:`partner_indices`). The per-sample coefficients come
    from ``h = hard_sigmoid(FC2(ReLU(FC1(GAP(x)))))`` mapped to ``(h − 0.5)·2·act_max`` and offset by
    ``init_a`` / ``init_b``; FC2's outputs are ordered ``[a1 | b1 | a2 | b2]``. With K = 1 the layer is
    the linear dynamic fusion ``a1 ⊙ x + b1 ⊙ x̂`` (no max, no ReLU), as in the official code.

    Args:
        fusions: K, 1 or 2.
        reduction: squeeze ratio of the coefficient branch; its width is
            ``make_divisible(C // reduction, 4)``.
        shift_groups: G, the number of channel groups for the shift; must divide C.
        init_a: offsets added to (a1, a2).
        init_b: offsets added to (b1, b2).
        act_max: half-range of the raw coefficients (official ACT_MAX = 2.0, so [-2, 2]).

    Input/output: (B, H, W, C) → (B, H, W, C). Per sample: 2K·C coefficients, see :meth:`coefficients`.
    """

    def __init__(
        self,
        fusions: int = 2,
        reduction: int = 8,
        shift_groups: int = 1,
        init_a: Sequence[float] = (1.0, 1.0),
        init_b: Sequence[float] = (0.0, 0.0),
        act_max: float = 2.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.fusions = check_choice("fusions", fusions, (1, 2))
        self.reduction = check_int("reduction", reduction)
        self.shift_groups = check_int("shift_groups", shift_groups)
        for name, value in (("init_a", init_a), ("init_b", init_b)):
            if len(value) != 2:
                raise ValueError(f"`{name}` must hold two offsets, got {value!r}.")
        self.init_a = [float(v) for v in init_a]
        self.init_b = [float(v) for v in init_b]
        if not act_max > 0:
            raise ValueError(f"`act_max` must be > 0, got {act_max!r}.")
        self.act_max = float(act_max)

    def build(self, input_shape):
        channels = channels_of(input_shape, "DynamicShiftMax")
        check_divisible("channels", channels, self.shift_groups, "shift_groups")
        self.squeeze = make_divisible(channels // self.reduction, 4)
        self.fc1 = keras.layers.Dense(self.squeeze, kernel_initializer=dense_initializer(), name="fc1")
        self.fc2 = keras.layers.Dense(
            2 * self.fusions * channels, kernel_initializer=dense_initializer(), name="fc2"
        )
        self.fc1.build((None, channels))
        self.fc2.build((None, self.squeeze))
        offsets = []
        for k in range(self.fusions):
            offsets += [self.init_a[k]] * channels + [self.init_b[k]] * channels
        # (h − 0.5)·2·act_max with h = relu6(z + 3)/6, plus the fixed offsets, folded into one affine map.
        self.offsets = np.asarray(offsets, "float32") - self.act_max
        self.channels = channels

    def coefficients(self, inputs):
        """Per-sample coefficients ``[a1, b1, (a2, b2)]``, each (B, 1, 1, C)."""
        q = lambda x, tag: quant_point(self, x, tag)  # noqa: E731  (the tensors int8 export quantizes)
        pooled = q(ops.mean(inputs, axis=(1, 2)), "pooled")
        z = self.fc2(q(ops.relu(self.fc1(pooled)), "squeezed"))
        h = q(ops.relu6(q(z, "fc2") + 3.0) * (self.act_max / 3.0) + self.offsets, "coefficients")
        h = ops.reshape(h, (-1, 1, 1, 2 * self.fusions * self.channels))
        return ops.split(h, 2 * self.fusions, axis=-1)

    def call(self, inputs):
        q = lambda x, tag: quant_point(self, x, tag)  # noqa: E731
        coeffs = self.coefficients(inputs)
        shifted = shift_to_partners(inputs, self.shift_groups)
        out = q(q(inputs * coeffs[0], "a1x") + q(shifted * coeffs[1], "b1x"), "fusion1")
        if self.fusions == 2:
            out = ops.maximum(out, q(q(inputs * coeffs[2], "a2x") + q(shifted * coeffs[3], "b2x"), "fusion2"))
        return out

    def static_equivalent(self, coefficients) -> "StaticShiftMax":
        """The static layer that computes this one with frozen ``coefficients`` (2K arrays, each
        broadcastable to (C,), ordered as :meth:`coefficients` returns them): exact, the same products
        in the same order, without the coefficient branch ("baking", :func:`dynzoo.export.bake`)."""
        values = np.stack([np.broadcast_to(np.asarray(c, "float32").reshape(-1), (self.channels,))
                           for c in coefficients])
        if values.shape[0] != 2 * self.fusions:
            raise ValueError(f"`coefficients` must hold {2 * self.fusions} arrays, got {values.shape[0]}.")
        layer = StaticShiftMax(self.fusions, self.shift_groups, name=f"{self.name}_static")
        layer.build((None, None, None, self.channels))
        layer.coefficient_values.assign(values)
        return layer

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_madds(self, input_shape) -> int:
        if not self.built:
            self.build(input_shape)
        elements = int(np.prod(input_shape[1:]))
        c = self.channels
        return c * self.squeeze + self.squeeze * 2 * self.fusions * c + 2 * self.fusions * elements

    def official_children(self):
        return [("fc.0", self.fc1), ("fc.2", self.fc2)]

    def get_config(self):
        return {
            **super().get_config(),
            "fusions": self.fusions,
            "reduction": self.reduction,
            "shift_groups": self.shift_groups,
            "init_a": self.init_a,
            "init_b": self.init_b,
            "act_max": self.act_max,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class StaticShiftMax(keras.layers.Layer):
    """Shift-Max with fixed per-channel coefficients: :class:`DynamicShiftMax` (thesis §4.3, eq. 4.4)
    with its coefficients frozen, ``y = max_k (a_k ⊙ x + b_k ⊙ x̂)`` (K = 1: no max). Made by
    :meth:`DynamicShiftMax.static_equivalent`; the coefficients are a non-trainable (2K, C) weight
    ``[a1, b1, (a2, b2)]``.

    Args:
        fusions: K, 1 or 2.
        shift_groups: G of the channel shift (:func:`partner_indices`); must divide C.

    Input/output: (B, H, W, C) → (B, H, W, C).
    """

    def __init__(self, fusions: int = 2, shift_groups: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.fusions = check_choice("fusions", fusions, (1, 2))
        self.shift_groups = check_int("shift_groups", shift_groups)

    def build(self, input_shape):
        channels = channels_of(input_shape, "StaticShiftMax")
        check_divisible("channels", channels, self.shift_groups, "shift_groups")
        self.coefficient_values = self.add_weight(
            shape=(2 * self.fusions, channels), initializer="zeros", trainable=False, name="coefficients")

    def call(self, inputs):
        c = ops.convert_to_tensor(self.coefficient_values)
        shifted = shift_to_partners(inputs, self.shift_groups)
        out = inputs * c[0] + shifted * c[1]
        if self.fusions == 2:
            out = ops.maximum(out, inputs * c[2] + shifted * c[3])
        return out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_madds(self, input_shape) -> int:
        return 2 * self.fusions * int(np.prod(input_shape[1:]))

    def get_config(self):
        return {**super().get_config(), "fusions": self.fusions, "shift_groups": self.shift_groups}
