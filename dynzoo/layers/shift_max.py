"""Dynamic Shift-Max (thesis §4.3), exactly as the official MicroNet code computes it.

Paper: Y. Li et al., "MicroNet: Improving Image Recognition with Extremely Low FLOPs", ICCV 2021,
https://arxiv.org/abs/2108.05894;
chapter 4 of Y. Li, "Dynamic Neural Networks for Resource Constrained Image Recognition", PhD thesis,
UC San Diego, 2021.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from dynzoo.layers.base import (
    PACKAGE,
    channels_of,
    check_choice,
    check_divisible,
    check_int,
    dense_initializer,
    in_export_form,
    in_integer_export_form,
    make_divisible,
    quant_point,
)
from dynzoo.layers.shuffle import PERMUTATION_MAX_CHANNELS, gathered

# K·C up to which a shift-max layer runs as one per-sample matrix product (:func:`shift_max_matrix_form`).
# In float32 TFLite, on the layers of MicroNet-M0 and M3 at 224×224, the matrix form was slower on every
# wider layer and faster on all but two narrower ones, which it trailed by under 0.01 ms
# (benchmarks/shift_max_probe.py); the element-wise form costs O(K·C) multiply-adds per pixel in a dozen
# ops, the matrix form O(K·C²) in one.
MATRIX_FORM_MAX_WIDTH = 192


@contextlib.contextmanager
def shift_max_form(matrix: bool):
    """Inside, every shift-max layer that is built, traced or exported runs in the matrix form (True) or
    the element-wise form (False), whatever its width (benchmarks; the int16x8 export)."""
    global MATRIX_FORM_MAX_WIDTH
    shipped = MATRIX_FORM_MAX_WIDTH
    MATRIX_FORM_MAX_WIDTH = 1 << 30 if matrix else 0
    try:
        yield
    finally:
        MATRIX_FORM_MAX_WIDTH = shipped


def maximum(a, b):
    """``max(a, b)``; in the full-integer export form ``a + relu(b − a)``, the same values from ops that
    XNNPACK runs on int8 (it has no int8 MAXIMUM: each one split the graph between two partitions)."""
    return a + ops.relu(b - a) if in_integer_export_form() else ops.maximum(a, b)


def partner_indices(channels: int, groups: int) -> np.ndarray:
    """Channel ``g·gc + c`` is paired with ``((g+1) mod G)·gc + ((c+1) mod gc)``, gc = C/G: the official
    code shifts by one group *and* one channel inside the group (the text shifts by the group only)."""
    per_group = channels // groups
    g, c = np.divmod(np.arange(channels), per_group)
    return (((g + 1) % groups) * per_group + (c + 1) % per_group).astype("int32")


def _rotate(x, axes: tuple[int, ...]):
    """``x`` rotated by one step towards lower indices along each of ``axes`` (element i takes element
    i + 1). Exported as static slices and concatenations (TFLite STRIDED_SLICE + CONCATENATION, which
    XNNPACK runs; neither GATHER nor a roll would be delegated); computed as one roll, whose gradient is
    the opposite roll (a strided slice's gradient is a scatter into zeros, the slowest op of a MicroNet
    training step)."""
    if not in_export_form():
        return ops.roll(x, [-1] * len(axes), axis=list(axes))
    for axis in axes:
        first = x[(slice(None),) * axis + (slice(0, 1),)]
        x = ops.concatenate([x[(slice(None),) * axis + (slice(1, None),)], first], axis=axis)
    return x


def shift_to_partners(x, groups: int):
    """``x[..., partner_indices(C, groups)]`` as rotations (:func:`_rotate`)."""
    channels = x.shape[-1]
    per_group = channels // groups
    if groups == 1 or per_group == 1:  # the partner is simply the next channel
        return _rotate(x, (3,))
    shape = ops.shape(x)
    grid = ops.reshape(x, (-1, shape[1], shape[2], groups, per_group))
    return ops.reshape(_rotate(grid, (3, 4)), (-1, shape[1], shape[2], channels))


def shift_max_matrix_form(
    x, a, b, shift_groups: int, output_order: Sequence[int] | None = None, quantize=lambda x, tag: x
):
    """``max_k (a_k ⊙ x + b_k ⊙ x̂)`` as ``max_k (x · M_k)``, one BATCH_MATMUL with a per-sample
    (C, K·C) matrix ``[M_1 | … | M_K]``, ``M_k = diag(a_k) + Π diag(b_k)`` (Π the partner permutation).

    ``a`` and ``b`` are ``[a_1 | … | a_K]`` and ``[b_1 | … | b_K]``, each (B or 1, K·C). ``output_order``
    (a gather index, e.g. a channel shuffle's permutation) reorders the output channels for free, as the
    order of the matrix's columns; the coefficients must then be given in that order too: column j of
    M_k takes ``a_k[j]`` from input channel ``order[j]`` and ``b_k[j]`` from that channel's partner. Every
    matrix entry is one coefficient or zero, so each output is the same two products and one sum as in
    the element-wise form.
    """
    c = x.shape[-1]
    fusions = a.shape[-1] // c
    order = np.arange(c) if output_order is None else np.asarray(output_order)
    source = np.zeros((c, c), "float32")
    source[order, np.arange(c)] = 1.0
    partner = np.zeros((c, c), "float32")
    partner[partner_indices(c, shift_groups)[order], np.arange(c)] = 1.0
    # the 0/1 patterns as backend tensors: with a NumPy operand NumPy would take over the product
    source, partner = (ops.convert_to_tensor(np.tile(m, (1, fusions))) for m in (source, partner))
    matrix = quantize(
        quantize(ops.expand_dims(a, 1) * source, "a_matrix") + quantize(ops.expand_dims(b, 1) * partner, "b_matrix"),
        "matrix",
    )
    shape = ops.shape(x)
    y = ops.matmul(ops.reshape(x, (shape[0], -1, c)), matrix)
    if fusions == 1:
        y = quantize(y, "fusion1")
    else:  # slices when exported (TFLite STRIDED_SLICE); a split when computed (a slice's gradient is slow)
        first, second = (y[..., :c], y[..., c:]) if in_export_form() else ops.split(y, 2, axis=-1)
        y = maximum(quantize(first, "fusion1"), quantize(second, "fusion2"))
    return ops.reshape(y, shape)


class _ShiftMaxForms:
    """The choice of form, shared by both shift-max layers (``fusions`` and ``channels`` set by build)."""

    integer_export_form = True  # element-wise, channels moved by 1×1 convolutions (base.has_integer_export_form)

    @property
    def uses_matrix_form(self) -> bool:
        """Whether this layer runs as :func:`shift_max_matrix_form`; never in the full-integer export form
        (XNNPACK has no int8 BATCH_MATMUL of two activations)."""
        return not in_integer_export_form() and self.fusions * self.channels <= MATRIX_FORM_MAX_WIDTH

    @property
    def uses_permutation(self) -> bool:
        """Whether this layer moves channels by :func:`gathered` (full-integer export form, narrow layers)."""
        return in_integer_export_form() and self.channels <= PERMUTATION_MAX_CHANNELS

    @property
    def takes_output_order(self) -> bool:
        """Whether :meth:`call` can take ``output_order`` (a channel shuffle that follows, for free)."""
        return self.uses_matrix_form or self.uses_permutation

    def _refuse_output_order(self, output_order) -> None:
        if output_order is not None:
            raise ValueError(
                f"{self.name}: `output_order` needs the matrix form (K·C <= {MATRIX_FORM_MAX_WIDTH}) "
                f"or, in the full-integer export form, C <= {PERMUTATION_MAX_CHANNELS}."
            )

    def _sources(self, x, output_order):
        """``x`` and its partners ``x̂``, both with their channels in ``output_order`` (element-wise form)."""
        if not self.uses_permutation:
            self._refuse_output_order(output_order)
            return x, shift_to_partners(x, self.shift_groups)
        partners = partner_indices(self.channels, self.shift_groups)
        if output_order is None:
            return x, gathered(x, partners)
        order = np.asarray(output_order)
        return tuple(ops.split(gathered(x, np.concatenate([order, partners[order]])), 2, axis=-1))


@keras.saving.register_keras_serializable(package=PACKAGE)
class DynamicShiftMax(_ShiftMaxForms, keras.layers.Layer):
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

    Layers with K·C ≤ :data:`MATRIX_FORM_MAX_WIDTH` run as one per-sample matrix product
    (:func:`shift_max_matrix_form`, the same products); in a :class:`~dynzoo.layers.base.SequenceBlock`
    they also take a channel shuffle that follows them as their output order. In the full-integer export
    form every layer runs element-wise, and layers up to ``PERMUTATION_MAX_CHANNELS`` channels move their
    channels (and take that shuffle) by 1×1 convolutions (:func:`~dynzoo.layers.shuffle.gathered`).

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
        self.fc2 = keras.layers.Dense(2 * self.fusions * channels, kernel_initializer=dense_initializer(), name="fc2")
        self.fc1.build((None, channels))
        self.fc2.build((None, self.squeeze))
        offsets = []
        for k in range(self.fusions):
            offsets += [self.init_a[k]] * channels + [self.init_b[k]] * channels
        # (h − 0.5)·2·act_max with h = relu6(z + 3)/6, plus the fixed offsets, folded into one affine map.
        self.offsets = np.asarray(offsets, "float32") - self.act_max
        self.channels = channels

    def _coefficient_columns(self, squeezed, index, tag: str):
        """Coefficients from fc2's output columns ``index`` (of its ``[a1 | b1 | a2 | b2]`` layout): the
        gather is on the weights, which the converter folds into constants."""
        q = lambda x, t: quant_point(self, x, t)  # noqa: E731  (the tensors int8 export quantizes)
        z = q(
            ops.matmul(squeezed, ops.take(self.fc2.kernel, index, axis=1)) + ops.take(self.fc2.bias, index),
            f"fc2_{tag}",
        )
        # a backend tensor, not a NumPy array: NumPy would take over the sum (PyTorch then refuses)
        return q(ops.relu6(z + 3.0) * (self.act_max / 3.0) + ops.convert_to_tensor(self.offsets[index]), tag)

    def _squeezed(self, inputs):
        q = lambda x, t: quant_point(self, x, t)  # noqa: E731
        return q(ops.relu(self.fc1(q(ops.mean(inputs, axis=(1, 2)), "pooled"))), "squeezed")

    def coefficients(self, inputs, output_order: Sequence[int] | None = None):
        """Per-sample coefficients ``[a1, b1, (a2, b2)]``, each (B, 1, 1, C), channels in ``output_order``."""
        order = np.arange(self.channels) if output_order is None else np.asarray(output_order)
        columns = np.concatenate([j * self.channels + order for j in range(2 * self.fusions)])
        h = self._coefficient_columns(self._squeezed(inputs), columns, "coefficients")
        h = ops.reshape(h, (-1, 1, 1, 2 * self.fusions * self.channels))
        return ops.split(h, 2 * self.fusions, axis=-1)

    def call(self, inputs, output_order: Sequence[int] | None = None):
        """``output_order``: a gather index applied to the output channels (:attr:`takes_output_order`)."""
        q = lambda x, tag: quant_point(self, x, tag)  # noqa: E731
        c, k = self.channels, self.fusions
        if self.uses_matrix_form:
            # a and b from two FULLY_CONNECTED ops, so that each has its own int8 range (a is near init_a,
            # b near init_b). Split from one tensor and concatenated, they got one part's range from the
            # int8 converter (a concatenation's inputs share its range), which clipped every a.
            order = np.arange(c) if output_order is None else np.asarray(output_order)
            squeezed = self._squeezed(inputs)
            a, b = (
                self._coefficient_columns(squeezed, np.concatenate([(2 * j + part) * c + order for j in range(k)]), tag)
                for part, tag in ((0, "a"), (1, "b"))
            )
            return shift_max_matrix_form(inputs, a, b, self.shift_groups, output_order, q)
        source, shifted = self._sources(inputs, output_order)
        coeffs = self.coefficients(inputs, output_order)
        out = q(q(source * coeffs[0], "a1x") + q(shifted * coeffs[1], "b1x"), "fusion1")
        if k == 2:
            out = maximum(out, q(q(source * coeffs[2], "a2x") + q(shifted * coeffs[3], "b2x"), "fusion2"))
        return out

    def static_equivalent(self, coefficients) -> StaticShiftMax:
        """The static layer that computes this one with frozen ``coefficients`` (2K arrays, each
        broadcastable to (C,), ordered as :meth:`coefficients` returns them): exact, the same products
        in the same order, without the coefficient branch ("baking", :func:`dynzoo.models.bake`)."""
        values = np.stack(
            [np.broadcast_to(np.asarray(c, "float32").reshape(-1), (self.channels,)) for c in coefficients]
        )
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
class StaticShiftMax(_ShiftMaxForms, keras.layers.Layer):
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
            shape=(2 * self.fusions, channels), initializer="zeros", trainable=False, name="coefficients"
        )
        self.channels = channels

    def call(self, inputs, output_order: Sequence[int] | None = None):
        """``output_order``: a gather index applied to the output channels (:attr:`takes_output_order`)."""
        c = ops.convert_to_tensor(self.coefficient_values)
        if self.uses_matrix_form:
            if output_order is not None:
                c = ops.take(c, np.asarray(output_order), axis=1)
            a, b = (ops.reshape(c[j::2], (1, -1)) for j in (0, 1))
            return shift_max_matrix_form(inputs, a, b, self.shift_groups, output_order)
        source, shifted = self._sources(inputs, output_order)
        if output_order is not None:
            c = ops.take(c, np.asarray(output_order), axis=1)
        out = source * c[0] + shifted * c[1]
        if self.fusions == 2:
            out = maximum(out, source * c[2] + shifted * c[3])
        return out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_madds(self, input_shape) -> int:
        return 2 * self.fusions * int(np.prod(input_shape[1:]))

    def get_config(self):
        return {**super().get_config(), "fusions": self.fusions, "shift_groups": self.shift_groups}
