"""MicroNet operators against independent NumPy references and the official code's index rules."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from dynzoo.layers import (
    ChannelShuffle,
    DynamicShiftMax,
    MicroBlock,
    MicroFactorizedDepthwise,
    MicroFactorizedPointwise,
    SymmetricConv2D,
    SymmetricDepthwiseConv2D,
)
from dynzoo.layers.base import make_divisible
from dynzoo.layers.micronet import MicroStem, factor_pair
from dynzoo.layers.shift_max import MATRIX_FORM_MAX_WIDTH, partner_indices
from dynzoo.layers.shuffle import shuffle_indices

RNG = np.random.default_rng(0)


def test_channel_shuffle_matches_the_view_transpose_definition():
    x = RNG.normal(size=(2, 3, 3, 12)).astype("float32")
    # PyTorch: view (B, g, C/g, H, W) → transpose(1, 2) → flatten; in NHWC the same on the last axis
    expected = x.reshape(2, 3, 3, 4, 3).transpose(0, 1, 2, 4, 3).reshape(2, 3, 3, 12)
    np.testing.assert_array_equal(ChannelShuffle(4)(x), expected)
    # a sequence of shuffles equals applying them in order, and gathering with the composed permutation
    twice = ChannelShuffle(3)(ChannelShuffle(4)(x))
    composed = ChannelShuffle([4, 3])
    np.testing.assert_array_equal(composed(x), twice)
    np.testing.assert_array_equal(composed(x), x[..., composed.permutation])
    assert list(shuffle_indices(8, 2)) == [0, 4, 1, 5, 2, 6, 3, 7]


@pytest.mark.parametrize("groups, width", [((2, 2), 32), ((4, 3), 30), ((4, 3), 31)])
def test_stem_folds_into_one_convolution_exactly(groups, width):
    """Inference runs the stem as one 3×3 stride-2 conv + a per-column bias; the layers one by one (BN
    statistics random, odd and even widths: the border columns are where folding needs care) agree."""
    stem = MicroStem(groups)
    x = RNG.normal(size=(2, 28, width, 3)).astype("float32")
    stem(x)
    for weight in stem.weights:
        low = 0.5 if "variance" in weight.name else -1.0
        weight.assign(RNG.uniform(low, 1.5, weight.shape).astype("float32"))
    one_by_one = x
    for layer in stem.steps:
        one_by_one = layer(one_by_one, training=False)
    np.testing.assert_allclose(stem(x, training=False), one_by_one, rtol=0, atol=1e-5)

    from dynzoo.export import op_names, run_tflite, to_tflite

    inputs = keras.Input((28, width, 3))
    model = keras.Model(inputs, stem(inputs))
    flatbuffer = to_tflite(model)
    assert op_names(flatbuffer) == ["PAD", "CONV_2D", "ADD"]  # the ReLU6 fused into the ADD
    np.testing.assert_allclose(run_tflite(flatbuffer, x), one_by_one, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "kernel, strides, expansion, width", [(3, 2, (2, 2), 17), (3, 2, (1, 1), 16), (5, 2, (1, 2), 15), (7, 1, (2, 1), 9)]
)
def test_micro_factorized_depthwise_exports_as_one_depthwise_convolution(
    kernel, strides, expansion, width, monkeypatch
):
    """Exported, the k×1 and 1×k pair (BN between, no activation) is one k×k depthwise convolution and a
    per-column bias: the same outputs as the layers one by one (random BN statistics; odd and even widths),
    in Keras and in TFLite; without the border columns' correction they differ."""
    from dynzoo.export import op_names, run_tflite, to_tflite
    from dynzoo.layers import micronet
    from dynzoo.layers.base import export_form

    layer = MicroFactorizedDepthwise(kernel, strides, expansion)
    x = RNG.normal(size=(2, 13, width, 4)).astype("float32")
    layer(x)
    for weight in layer.weights:
        low = 0.5 if "variance" in weight.name else -1.0
        weight.assign(RNG.uniform(low, 1.5, weight.shape).astype("float32"))
    one_by_one = np.asarray(layer(x, training=False))
    with export_form():
        np.testing.assert_allclose(layer(x, training=False), one_by_one, rtol=0, atol=1e-5)
    inputs = keras.Input((13, width, 4))
    flatbuffer = to_tflite(keras.Model(inputs, layer(inputs)))
    assert op_names(flatbuffer) in (["PAD", "DEPTHWISE_CONV_2D", "ADD"], ["DEPTHWISE_CONV_2D", "ADD"])  # SAME pad
    np.testing.assert_allclose(run_tflite(flatbuffer, x), one_by_one, rtol=0, atol=1e-5)
    monkeypatch.setattr(micronet, "column_bias", lambda taps, width, strides: ops.sum(taps, axis=0))
    with export_form():
        assert np.abs(np.asarray(layer(x, training=False)) - one_by_one).max() > 1e-2


def test_partner_indices_shift_by_a_group_and_a_channel():
    # the examples of the spec (§1.6)
    assert list(partner_indices(8, 2)) == [5, 6, 7, 4, 1, 2, 3, 0]
    assert list(partner_indices(12, 4)) == [4, 5, 3, 7, 8, 6, 10, 11, 9, 1, 2, 0]


@pytest.mark.parametrize("value, expected", [(2, 4), (6, 8), (24, 24), (12, 12), (20, 20), (44, 44), (9, 12)])
def test_make_divisible(value, expected):
    assert make_divisible(value, 4) == expected


def _shift_max_reference(layer: DynamicShiftMax, x: np.ndarray) -> np.ndarray:
    """Eq. 4.4 in the official form, written out in NumPy."""
    w1, b1 = (v.numpy() for v in layer.fc1.weights)
    w2, b2 = (v.numpy() for v in layer.fc2.weights)
    c = x.shape[-1]
    pooled = x.mean(axis=(1, 2))
    h = np.maximum(pooled @ w1 + b1, 0) @ w2 + b2
    h = np.clip(h + 3, 0, 6) / 6
    h = (h - 0.5) * 2 * layer.act_max
    parts = np.split(h, 2 * layer.fusions, axis=-1)
    idx = partner_indices(c, layer.shift_groups)
    partner = x[..., idx]
    outs = []
    for k in range(layer.fusions):
        a = parts[2 * k][:, None, None] + layer.init_a[k]
        b = parts[2 * k + 1][:, None, None] + layer.init_b[k]
        outs.append(x * a + partner * b)
    return np.maximum(*outs) if layer.fusions == 2 else outs[0]


@pytest.mark.parametrize("channels", [24, 120])  # K·C within / beyond MATRIX_FORM_MAX_WIDTH
@pytest.mark.parametrize(
    "fusions, init_a, init_b", [(2, (1.0, 1.0), (0.0, 0.0)), (2, (1.0, 0.5), (0.0, 0.5)), (1, (1.0, 0.0), (0.0, 0.0))]
)
def test_dynamic_shift_max_matches_reference(fusions, init_a, init_b, channels):
    x = RNG.normal(size=(3, 5, 4, channels)).astype("float32")
    layer = DynamicShiftMax(fusions, reduction=4, shift_groups=6, init_a=init_a, init_b=init_b)
    layer.build(x.shape)
    assert layer.uses_matrix_form == (fusions * channels <= MATRIX_FORM_MAX_WIDTH)
    for v in layer.weights:  # large weights so that every branch of the hard sigmoid is exercised
        v.assign(RNG.normal(size=v.shape).astype("float32"))
    expected = _shift_max_reference(layer, x)
    # float32 rounding of the large coefficient logits (N(0, 1) weights) scales with the outputs
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(expected).max()))
    coeffs = layer.coefficients(x)
    assert len(coeffs) == 2 * fusions and tuple(coeffs[0].shape) == (3, 1, 1, channels)
    assert layer.squeeze == make_divisible(channels // 4)
    # the coefficients are per sample: changing one sample changes only its output
    x2 = x.copy()
    x2[0] += 1.0
    out1, out2 = np.asarray(layer(x)), np.asarray(layer(x2))
    np.testing.assert_array_equal(out1[1:], out2[1:])


def test_shift_max_matrix_form_takes_an_output_order():
    """In matrix form a following channel shuffle becomes the order of the matrix's columns (exact: the
    same products); the element-wise form refuses an order."""
    x = RNG.normal(size=(2, 5, 4, 24)).astype("float32")
    shuffle = ChannelShuffle([6, 4])
    shuffle.build(x.shape)
    order = tuple(int(i) for i in shuffle.permutation)
    layer = DynamicShiftMax(2, reduction=4, shift_groups=6)
    layer.build(x.shape)
    for v in layer.weights:
        v.assign(RNG.normal(size=v.shape).astype("float32"))
    np.testing.assert_array_equal(layer(x, output_order=order), np.asarray(layer(x))[..., list(order)])
    static = layer.static_equivalent([c[0] for c in layer.coefficients(x[:1])])
    np.testing.assert_array_equal(static(x[:1], output_order=order), np.asarray(layer(x[:1]))[..., list(order)])
    wide = DynamicShiftMax(2, reduction=4, shift_groups=6)
    wide.build((None, 5, 4, 120))
    with pytest.raises(ValueError, match="output_order"):
        wide(RNG.normal(size=(1, 5, 4, 120)).astype("float32"), output_order=tuple(range(120)))


def test_dynamic_shift_max_starts_as_identity():
    """With the authors' init (FC ~ N(0, 0.01), zero bias) and offsets (1, 1)/(0, 0), y ≈ x (thesis §4.3)."""
    x = RNG.normal(size=(2, 4, 4, 16)).astype("float32")
    y = DynamicShiftMax(2, 4, 4)(x)
    np.testing.assert_allclose(y, x, atol=0.05 * np.abs(x).max())


def _depthwise_reference(x, kernel, strides):
    """PyTorch nn.Conv2d(groups=C, padding=k//2) in NumPy; kernel (kh, kw, C, m)."""
    kh, kw, c, m = kernel.shape
    sh, sw = strides
    xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    oh = (x.shape[1] + 2 * (kh // 2) - kh) // sh + 1
    ow = (x.shape[2] + 2 * (kw // 2) - kw) // sw + 1
    out = np.zeros((x.shape[0], oh, ow, c, m), "float32")
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * sh : i * sh + kh, j * sw : j * sw + kw, :]
            out[:, i, j] = np.einsum("bhwc,hwcm->bcm", patch, kernel)
    return out.reshape(x.shape[0], oh, ow, c * m)


@pytest.mark.parametrize(
    "kernel, strides", [((3, 1), (2, 1)), ((1, 3), (1, 2)), ((5, 1), (2, 1)), ((3, 3), (2, 2)), ((1, 5), (1, 1))]
)
@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_symmetric_depthwise_matches_pytorch_arithmetic(kernel, strides, size):
    x = RNG.normal(size=(2, *size, 3)).astype("float32")
    layer = SymmetricDepthwiseConv2D(kernel, strides, depth_multiplier=2, use_bias=False)
    y = layer(x)
    np.testing.assert_allclose(y, _depthwise_reference(x, layer.kernel.numpy(), strides), rtol=1e-5, atol=1e-5)
    assert tuple(y.shape) == tuple(layer.compute_output_shape(x.shape))


def test_symmetric_conv_pads_like_pytorch_on_even_inputs():
    x = RNG.normal(size=(1, 8, 8, 2)).astype("float32")
    layer = SymmetricConv2D(1, (3, 3), (2, 2), use_bias=False)
    y = np.asarray(layer(x))
    k = layer.kernel.numpy()[..., 0]  # (3, 3, 2)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    assert np.isclose(y[0, 0, 0, 0], (xp[0, 0:3, 0:3] * k).sum(), atol=1e-5)
    assert np.isclose(y[0, 3, 3, 0], (xp[0, 6:9, 6:9] * k).sum(), atol=1e-5)


def test_micro_factorized_depthwise_is_two_separable_convs():
    x = RNG.normal(size=(2, 8, 8, 4)).astype("float32")
    layer = MicroFactorizedDepthwise(3, strides=2, expansion=(2, 2))
    y = layer(x)
    assert tuple(y.shape) == (2, 4, 4, 16)
    dw1, _, dw2, _ = layer.steps
    ref = _depthwise_reference(x, dw1.kernel.numpy(), (2, 1))  # BN is identity at init (eval mode)
    ref = _depthwise_reference(ref, dw2.kernel.numpy(), (1, 2))
    np.testing.assert_allclose(y, ref / (1 + 1e-5), rtol=1e-4, atol=1e-4)
    # MAdds as the paper counts them: k×1 at the strided output, then 1×k
    assert layer.compute_madds(x.shape) == 4 * 8 * 8 * 3 + 4 * 4 * 16 * 3


def test_micro_factorized_pointwise_connects_every_input_once():
    """Eq. 4.3: with G1·G2 = C/R every output depends on every input exactly through one path."""
    assert factor_pair(32) == (4, 8) and factor_pair(16) == (4, 4) and factor_pair(120) == (10, 12)
    layer = MicroFactorizedPointwise(filters=16, hidden=8, groups=(2, 4))
    layer.build((None, 1, 1, 16))
    q, p = layer.steps[0].steps[0].kernel.numpy(), layer.steps[2].steps[0].kernel.numpy()
    # count input→output paths through the block-diagonal Q, the shuffle and P
    dense_q = np.zeros((16, 8))
    for g in range(2):
        dense_q[g * 8 : (g + 1) * 8, g * 4 : (g + 1) * 4] = q[0, 0, :, g * 4 : (g + 1) * 4] != 0
    perm = shuffle_indices(8, 2)
    dense_p = np.zeros((8, 16))
    for g in range(4):
        dense_p[g * 2 : (g + 1) * 2, g * 4 : (g + 1) * 4] = p[0, 0, :, g * 4 : (g + 1) * 4] != 0
    paths = dense_q[:, perm] @ dense_p
    assert (paths == 1).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(block_type="D", filters=8), "block_type"),
        (dict(block_type="A", filters=0), "filters"),
        (dict(block_type="BC", filters=8, activations=(3, 2, 1)), "activations"),
        (dict(block_type="BC", filters=8, expansion=(1, 0)), "expansion"),
    ],
)
def test_micro_block_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MicroBlock(**kwargs)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: DynamicShiftMax(fusions=3), "fusions"),
        (lambda: DynamicShiftMax(reduction=0), "reduction"),
        (lambda: DynamicShiftMax(act_max=0), "act_max"),
        (lambda: DynamicShiftMax(init_a=(1.0,)), "init_a"),
        (lambda: DynamicShiftMax(shift_groups=5)(np.zeros((1, 2, 2, 8), "float32")), "shift_groups"),
        (lambda: ChannelShuffle(3)(np.zeros((1, 2, 2, 8), "float32")), "groups"),
        (lambda: SymmetricDepthwiseConv2D((3, 1), (2, 3)), "strides"),
        (lambda: MicroFactorizedDepthwise(4), "kernel_size"),
    ],
)
def test_layers_reject_bad_arguments(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    "layer",
    [
        DynamicShiftMax(2, 4, 4, init_a=(1.0, 0.5), init_b=(0.0, 0.5)),
        ChannelShuffle([4, 2]),
        MicroBlock(
            "BC",
            16,
            kernel_size=3,
            strides=1,
            expansion=(1, 4),
            expand_groups=(4, 4),
            squeeze_groups=(4, 4),
            activations=(2, 2, 1),
            reduction=8,
        ),
        MicroBlock(
            "A",
            12,
            kernel_size=3,
            strides=2,
            expansion=(2, 2),
            expand_groups=(0, 8),
            squeeze_groups=(4, 4),
            activations=(2, 2, 1),
            reduction=8,
        ),
        MicroFactorizedPointwise(16, 8),
    ],
    ids=lambda l: type(l).__name__,
)
def test_layer_config_round_trip(layer):
    x = RNG.normal(size=(2, 8, 8, 16)).astype("float32")
    y = layer(x)
    clone = type(layer).from_config(layer.get_config())
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(x), y)
    assert keras.saving.get_registered_name(type(layer)).startswith("dynzoo>")


# --- the two forms of grouped and unequal-stride convolutions (dynzoo/layers/conv.py) ---------------------


def _value_and_gradients(layer_or_model, x, target, training):
    """A squared-error loss against ``target`` and its gradients for the input and every weight."""
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_mean((layer_or_model(x, training=training) - target) ** 2)
    return [loss, *tape.gradient(loss, [x, *layer_or_model.trainable_variables])]


def _assert_forms_agree(layer_or_model, x, target, rtol, training=True):
    from dynzoo.layers.base import export_form

    computed = _value_and_gradients(layer_or_model, x, target, training)
    with export_form():
        exported = _value_and_gradients(layer_or_model, x, target, training)
    assert len(computed) == len(exported) > 2
    for c, e in zip(computed, exported, strict=False):
        e = np.asarray(e)
        assert np.abs(e).max() > 0  # every gradient reaches its weight
        np.testing.assert_allclose(np.asarray(c), e, rtol=0, atol=rtol * np.abs(e).max())


@pytest.mark.parametrize(
    "make, channels",
    [
        (lambda: SymmetricConv2D(12, 1, groups=3, use_bias=True), 12),  # grouped 1×1: one einsum when computed
        (lambda: SymmetricConv2D(8, 1, groups=4), 12),
        # unequal-stride depthwise, computed with a block-diagonal kernel (few channels) or folded (many)
        (lambda: SymmetricDepthwiseConv2D((3, 1), (2, 1), depth_multiplier=2), 12),
        (lambda: SymmetricDepthwiseConv2D((1, 5), (1, 2), use_bias=True), 12),
        (lambda: SymmetricDepthwiseConv2D((5, 1), (2, 1), depth_multiplier=2, use_bias=True), 20),
        (lambda: SymmetricDepthwiseConv2D((1, 3), (1, 2), depth_multiplier=2), 20),
        (lambda: SymmetricDepthwiseConv2D((3, 3), (2, 1)), 20),
    ],
    ids=[
        "pointwise_g3_bias",
        "pointwise_g4",
        "depthwise_3x1_s2x1_m2",
        "depthwise_1x5_s1x2_bias",
        "folded_5x1_s2x1_m2_bias",
        "folded_1x3_s1x2_m2",
        "depthwise_3x3_s2x1_wide",
    ],
)
def test_compute_form_equals_the_export_form_with_gradients(make, channels):
    """The form Keras trains (einsum; a block-diagonal or folded depthwise convolution) and the one
    convolution that is exported give the same outputs and the same input and weight gradients, to float
    round-off."""
    from dynzoo.layers.conv import DENSE_DEPTHWISE_MAX_CHANNELS

    assert (channels > DENSE_DEPTHWISE_MAX_CHANNELS) == (channels == 20)  # both depthwise forms are covered
    rng = np.random.default_rng(3)
    layer = make()
    x = rng.normal(size=(2, 9, 10, channels)).astype("float32")
    layer.build(x.shape)
    layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])
    target = rng.normal(size=layer.compute_output_shape(x.shape)).astype("float32")
    _assert_forms_agree(layer, x, target, rtol=1e-5)


@pytest.mark.parametrize("matrix", [True, False], ids=["matrix", "element_wise"])
@pytest.mark.parametrize("fusions, shift_groups", [(1, 1), (2, 1), (2, 4)])
def test_shift_max_compute_form_equals_the_export_form_with_gradients(matrix, fusions, shift_groups):
    """Dynamic Shift-Max computed (a roll for the channel shift, a split of the two fusions) and exported
    (static slices and concatenations): the same outputs and gradients, in both of its forms."""
    from dynzoo.layers.shift_max import shift_max_form

    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 5, 6, 16)).astype("float32")
    with shift_max_form(matrix=matrix):
        layer = DynamicShiftMax(fusions, reduction=4, shift_groups=shift_groups, init_b=(0.5, 0.5))
        layer.build(x.shape)
        layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])
        assert layer.uses_matrix_form == matrix
        _assert_forms_agree(layer, x, rng.normal(size=x.shape).astype("float32"), rtol=1e-5)


def test_batch_normalization_trains_as_keras_does():
    """dynzoo's BatchNormalization (TensorFlow's fused kernel in training) against Keras' own: the same
    output, input and weight gradients and moving statistics after a step, to float round-off; and
    Keras' code where the fused kernel does not apply (inference)."""
    import tensorflow as tf

    from dynzoo.layers.base import batchnorm

    rng = np.random.default_rng(7)
    x = tf.constant(rng.normal(2.0, 3.0, size=(4, 5, 6, 8)).astype("float32"))
    target = rng.normal(size=x.shape).astype("float32")
    fused, plain = batchnorm(), keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9)
    for layer in (fused, plain):
        layer.build(x.shape)
        layer.set_weights([rng.normal(1.0, 0.2, size=(8,)).astype("float32") for _ in range(4)])
    layer.set_weights(fused.get_weights())
    (y_fused, *grads_fused), (y_plain, *grads_plain) = (
        _value_and_gradients(layer, x, target, True) for layer in (fused, plain)
    )
    np.testing.assert_allclose(y_fused, y_plain, rtol=1e-5)
    for f, p in zip(grads_fused, grads_plain, strict=False):
        np.testing.assert_allclose(f, p, rtol=0, atol=1e-5 * np.abs(p).max())
    for f, p in zip(fused.get_weights(), plain.get_weights(), strict=False):  # gamma, beta, moving mean and variance
        np.testing.assert_allclose(f, p, rtol=1e-5)
    assert not np.allclose(fused.moving_variance, 1.0)  # the step did update them
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), rtol=1e-5, atol=1e-6)
    traced = tf.function(lambda v: fused(v, training=True)).get_concrete_function(x).graph
    assert "FusedBatchNormV3" in {op.type for op in traced.get_operations()}


def test_micronet_has_the_export_forms_loss_and_gradients():
    """A whole MicroNet-M0 (every Micro-Block type: grouped pointwise, unequal-stride depthwise, Dynamic
    Shift-Max): the same loss and the same gradient for every weight in both forms. BatchNorm in inference
    mode: the forms differ only in the convolutions, and batch statistics over the last stages' 1×1 maps
    would amplify float32 round-off in the first layers' gradients to 1e-3 of their largest entry."""
    import dynzoo

    model = dynzoo.create_model("micronet_m0", input_shape=(32, 32, 3), classes=10, classifier_activation=None)
    x = np.random.default_rng(4).normal(size=(4, 32, 32, 3)).astype("float32")
    target = np.random.default_rng(5).normal(size=(4, 10)).astype("float32")
    _assert_forms_agree(model, x, target, rtol=1e-5, training=False)
