"""DCDConv2D / DCDDense: the official form and its folded inference, the text's variants, the L and
squeeze rules of the code, MAdds, serialization and errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from dynzoo.layers import DCDConv2D, DCDDense, count_madds
from dynzoo.layers.dcd import (
    adaptive_pool,
    mobilenetv2_latent_dim,
    official_squeeze,
    resnet_dcd_settings,
)
from dynzoo.train.optimizers import FusedAdam

RNG = np.random.default_rng(0)


def randomize(layer, seed=0):
    """Random weights and BN statistics, large enough that every term matters."""
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        value = rng.normal(0, 0.3, size=v.shape)
        if "variance" in v.path:
            value = np.abs(value) + 0.5
        v.assign(value.astype("float32"))


def built(layer, shape, seed=0):
    layer.build(shape)
    randomize(layer, seed)
    return layer


def inputs(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def hsig2(z):
    return np.clip(z + 3.0, 0.0, 6.0) / 3.0


def reference_dcd(layer, x):
    """NumPy re-implementation of the official DYModule forward (``mobilenetv2_dcd.py``), 1×1 stride 1."""
    w = lambda l: l.kernel.numpy()
    n, h, wd, _c = x.shape
    if layer.pool_size == 2:
        rows = [(0, -(-h // 2)), (h // 2, h)]
        cols = [(0, -(-wd // 2)), (wd // 2, wd)]
        pooled = np.stack([x[:, r0:r1, c0:c1].mean(axis=(1, 2)) for r0, r1 in rows for c0, c1 in cols], -1)
        pooled = pooled.reshape(n, -1)  # channel-major: c·4 + cell
    else:
        pooled = x.mean(axis=(1, 2))
    y = pooled @ w(layer.fc)
    y = y * hsig2(y @ w(layer.fc_gate))
    lam = hsig2(y @ w(layer.fc_scale))
    phi = (y @ w(layer.fc_phi)).reshape(n, layer.latent_dim_, layer.latent_dim_)

    def bn(z, b):
        return (z - b.moving_mean.numpy()) / np.sqrt(
            b.moving_variance.numpy() + 1e-5
        ) * b.gamma.numpy() + b.beta.numpy()

    r = lam[:, None, None, :] * (x @ w(layer.conv)[0, 0])
    u = bn(x @ w(layer.q[0])[0, 0], layer.bn1).reshape(n, h * wd, -1)
    v = bn(np.einsum("nij,npj->npi", phi, u), layer.bn2) + u
    return r + (v @ w(layer.p[0])[0, 0]).reshape(n, h, wd, -1)


@pytest.mark.parametrize("pool_size, size", [(1, 8), (2, 8), (2, 7)])
def test_official_form_matches_a_numpy_reference(pool_size, size):
    layer = built(DCDConv2D(24, latent_dim=4, squeeze=6, pool_size=pool_size), (None, size, size, 12))
    x = inputs((3, size, size, 12))
    expected = reference_dcd(layer, x)
    for training_free in (layer._forward(x, False), layer(x)):
        np.testing.assert_allclose(np.asarray(training_free), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "form, kernel_size, strides",
    [(form, 1, 1) for form in ("parallel", "kernel", "auto")]
    + [(form, k, s) for form in ("parallel", "auto") for k, s in ((3, 1), (3, 2), (1, 2))],
)
@pytest.mark.parametrize(
    "variant", [{}, {"channel_fusion": False}, {"attention": False}], ids=["official", "lambda-only", "phi-only"]
)
def test_folded_inference_equals_the_module_followed_by_its_batchnorm(form, kernel_size, strides, variant):
    layer = built(
        DCDConv2D(16, kernel_size, strides, latent_dim=4, squeeze=8, pool_size=2, inference_form=form, **variant),
        (None, 30, 30, 8),
    )
    bn = keras.layers.BatchNormalization(epsilon=1e-5)
    bn.build((None, None, None, 16))
    randomize(bn, 3)
    x = inputs((2, 30, 30, 8))
    plain = layer._forward(x, False)
    np.testing.assert_allclose(layer.inference(x), plain, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.inference(x, output_bn=bn), bn(plain, training=False), rtol=1e-4, atol=1e-4)


def test_training_uses_batch_statistics_and_gradients_reach_every_weight():
    layer = built(DCDConv2D(16, latent_dim=4, pool_size=2), (None, 8, 8, 8))
    x = tf.constant(inputs((4, 8, 8, 8)))
    with tf.GradientTape() as tape:
        y = layer(x, training=True)
        loss = tf.reduce_sum(y**2)
    grads = tape.gradient(loss, layer.trainable_weights)
    assert all(g is not None and np.any(g.numpy()) for g in grads)
    assert np.abs(np.asarray(y) - np.asarray(layer(x, training=False))).max() > 1e-3


@pytest.mark.slow
def test_a_small_dcd_network_learns_digits():
    """Training mode (batch-statistics BNs, dynamic branches, DCDDense head) really learns the offline
    digits: far above the 10% chance level after a few epochs. Measured: test accuracy 0.79 after 5 epochs
    with dynzoo's fused Adam (0.78 with Keras' Adam)."""
    from dynzoo.data.digits import digits_arrays
    from dynzoo.layers.base import batchnorm

    x_train, y_train = digits_arrays("train", 16)
    x_test, y_test = digits_arrays("test", 16)
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.ReLU()(batchnorm()(keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(x)))
    x = keras.layers.ReLU()(batchnorm()(DCDConv2D(32, 3, 2, latent_dim=8, pool_size=2)(x)))
    x = keras.layers.ReLU()(batchnorm()(DCDConv2D(32, latent_dim=8)(x)))
    out = DCDDense(10, latent_dim=8, squeeze=16)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    model.compile(FusedAdam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=32, epochs=5, verbose=0)
    accuracy = (np.asarray(model(x_test, training=False)).argmax(-1) == y_test).mean()  # evaluate would trace
    assert accuracy > 0.6


def test_coefficients_are_inspectable_and_per_sample():
    layer = built(DCDConv2D(16, latent_dim=4, blocks=2), (None, 8, 8, 8))
    coeffs = layer.coefficients(inputs((3, 8, 8, 8)))
    assert coeffs["scale"].shape == (3, 16) and coeffs["phi"].shape == (3, 2, 4, 4)
    scale = np.asarray(coeffs["scale"])
    assert scale.min() >= 0 and scale.max() <= 2  # Λ = relu6(z + 3)/3
    assert np.abs(scale[0] - scale[1]).max() > 0  # differs from sample to sample
    assert set(built(DCDConv2D(8, channel_fusion=False), (None, 4, 4, 8)).coefficients(inputs((1, 4, 4, 8)))) == {
        "scale"
    }
    assert set(
        built(DCDConv2D(8, latent_dim=2, attention=False), (None, 4, 4, 8)).coefficients(inputs((1, 4, 4, 8)))
    ) == {"phi"}


def test_text_variants_lambda_only_and_phi_only():
    """``Λ W0`` is the static conv scaled per channel; ``W0 + PΦQᵀ`` has no scaling."""
    x = inputs((2, 6, 6, 8))
    lam_only = built(DCDConv2D(12, channel_fusion=False), (None, 6, 6, 8))
    static = np.asarray(lam_only.conv(x))
    scale = np.asarray(lam_only.coefficients(x)["scale"])
    np.testing.assert_allclose(lam_only(x), static * scale[:, None, None, :], rtol=1e-5, atol=1e-5)
    assert not hasattr(lam_only, "q")
    phi_only = built(DCDConv2D(12, latent_dim=3, attention=False), (None, 6, 6, 8))
    assert phi_only.fc_scale is None
    residual = np.asarray(phi_only(x)) - np.asarray(phi_only.conv(x))
    assert np.abs(residual).max() > 1e-3


def test_sparse_dynamic_residual_is_block_diagonal():
    """eq. 3.7: with B blocks, input block b only reaches output block b through the residual."""
    layer = built(DCDConv2D(12, latent_dim=2, blocks=2, attention=False), (None, 5, 5, 8))
    layer.conv.kernel.assign(np.zeros(layer.conv.kernel.shape, "float32"))  # keep only the residual
    x = inputs((1, 5, 5, 8))
    # Φ comes from the pooled input; keep the pooled features (hence Φ) fixed by a zero-mean change
    bump = np.zeros_like(x)
    bump[0, 0, 0, :4], bump[0, 1, 0, :4] = 1.0, -1.0
    delta = np.asarray(layer(x + bump)) - np.asarray(layer(x))
    assert np.abs(delta[..., 6:]).max() < 1e-5 and np.abs(delta[..., :6]).max() > 1e-3
    assert layer.coefficients(x)["phi"].shape == (1, 2, 2, 2)


def test_depthwise_dcd_matches_eq_3_8():
    """y_c = Λ_c (W0_c * x_c) + Σ_j (PΦ)_{c,j} (R_j * x_c) — checked with a per-sample depthwise kernel."""
    layer = built(DCDConv2D(depthwise=True, kernel_size=3, strides=2), (None, 9, 9, 6))
    assert layer.latent_dim_ == 4  # L_k = ⌊k²/2⌋
    x = inputs((2, 9, 9, 6))
    coeffs = layer.coefficients(x)
    got = np.asarray(layer(x))
    w0 = layer.conv.kernel.numpy()[:, :, :, 0]  # (3, 3, C)
    basis = layer.basis.numpy()[:, :, 0, :]  # (3, 3, L_k)
    for n in range(2):
        pphi = layer.p_weight.numpy() @ np.asarray(coeffs["phi"])[n, 0]  # (C, L_k)
        kernel = np.asarray(coeffs["scale"])[n] * w0 + np.einsum("cj,hwj->hwc", pphi, basis)
        conv = SymmetricDepthwise(kernel, strides=2)
        np.testing.assert_allclose(got[n], conv(x[n : n + 1])[0], rtol=1e-4, atol=1e-4)


def SymmetricDepthwise(kernel, strides):
    from dynzoo.layers import SymmetricDepthwiseConv2D

    layer = SymmetricDepthwiseConv2D(kernel.shape[0], strides, use_bias=False)
    layer.build((None, None, None, kernel.shape[-1]))
    layer.kernel.assign(kernel[..., None])
    return lambda x: np.asarray(layer(x))


def test_kxk_channel_fusion_is_a_1x1_residual_at_the_window_centres():
    """A k×k DCD with stride s equals the 1×1 DCD with stride s plus the k×k conv's non-centre taps."""
    big = built(DCDConv2D(10, 3, 2, latent_dim=3, squeeze=5, pool_size=2), (None, 10, 10, 6))
    small = DCDConv2D(10, 1, 2, latent_dim=3, squeeze=5, pool_size=2)
    small.build((None, 10, 10, 6))
    for a, b in zip(small.weights, big.weights, strict=False):
        b_value = b.numpy()
        a.assign(b_value[1:2, 1:2] if b.path.endswith("conv/kernel") else b_value)
    x = inputs((2, 10, 10, 6))
    kernel = big.conv.kernel.numpy().copy()
    kernel[1, 1] = 0.0
    from dynzoo.layers import SymmetricConv2D

    outer = SymmetricConv2D(10, 3, 2, use_bias=False)
    outer.build((None, 10, 10, 6))
    outer.kernel.assign(kernel)
    scale = np.asarray(big.coefficients(x)["scale"])[:, None, None, :]
    np.testing.assert_allclose(big(x), np.asarray(small(x)) + scale * np.asarray(outer(x)), rtol=1e-4, atol=1e-4)


def test_adaptive_2x2_pool_has_pytorch_overlapping_windows_on_odd_sizes():
    x = inputs((2, 7, 7, 3))
    got = np.asarray(adaptive_pool(x, 2)).reshape(2, 3, 4)  # channel-major
    cells = [x[:, 0:4, 0:4], x[:, 0:4, 3:7], x[:, 3:7, 0:4], x[:, 3:7, 3:7]]
    np.testing.assert_allclose(got, np.stack([c.mean(axis=(1, 2)) for c in cells], -1), rtol=1e-6, atol=1e-6)
    nhwc = np.asarray(adaptive_pool(x, 2, channel_major=False)).reshape(2, 4, 3)
    np.testing.assert_allclose(nhwc.transpose(0, 2, 1), got, rtol=1e-6)
    # a size known only at run time (a model built for any input size) takes the same windows
    dynamic = tf.function(lambda t: adaptive_pool(t, 2), input_signature=[tf.TensorSpec((None, None, None, 3))])
    np.testing.assert_allclose(np.asarray(dynamic(x)).reshape(2, 3, 4), got, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "cin, cout, fc_squeeze, latent, pool, squeeze",
    [  # the official modules' per-layer L and squeeze at 224×224, rows of ×1.0 (fc_squeeze 16), ×0.5 and ×0.35 (8)
        (16, 96, 16, 8, 2, 4),
        (96, 24, 16, 12, 1, 9),
        (144, 32, 16, 16, 1, 16),
        (384, 64, 16, 16, 1, 24),
        (160, 960, 16, 20, 2, 40),
        (960, 320, 16, 40, 1, 100),
        (8, 48, 8, 4, 2, 4),
        (48, 16, 8, 8, 1, 8),
        (32, 192, 8, 16, 2, 32),
        (192, 48, 8, 12, 1, 24),
        (288, 48, 8, 24, 1, 72),
        (48, 8, 8, 4, 1, 6),
        (56, 336, 8, 14, 2, 28),
        (336, 112, 8, 14, 1, 42),
    ],
)
def test_mobilenetv2_latent_and_squeeze_rules_of_the_code(cin, cout, fc_squeeze, latent, pool, squeeze):
    assert mobilenetv2_latent_dim(cin, cout) == (latent, pool)
    assert official_squeeze(cin * pool * pool, latent, fc_squeeze) == squeeze


def test_resnet_rules_of_the_code():
    assert resnet_dcd_settings(128, bottleneck=False) == {"latent_dim": 22, "squeeze": 32, "pool_size": 2}
    assert resnet_dcd_settings(512, bottleneck=False) == {"latent_dim": 45, "squeeze": 128, "pool_size": 2}
    assert resnet_dcd_settings(64, bottleneck=True) == {"latent_dim": 8, "squeeze": 4, "pool_size": 1}
    assert resnet_dcd_settings(2048, bottleneck=True) == {"latent_dim": 45, "squeeze": 128, "pool_size": 1}


def test_parameters_and_madds_follow_the_formulas():
    cin, cout, lat, sq = 32, 64, 8, 16
    layer = DCDConv2D(cout, latent_dim=lat, squeeze=sq, pool_size=2)
    layer.build((None, 14, 14, cin))
    params = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
    # W0, Q, P, FC(4C_in→sq), gate, fc_phi, fc_scale, BN1/BN2 γβ
    assert params == cin * cout + cin * lat + lat * cout + 4 * cin * sq + sq * sq + sq * lat**2 + sq * cout + 4 * lat
    pixels = 14 * 14
    expected = (
        pixels * (cin * cout + cin * lat + lat * lat + lat * cout + cout)
        + 4 * cin * sq
        + sq * sq
        + sq * lat**2
        + sq * cout
    )
    assert count_madds(layer, (None, 14, 14, cin)) == expected
    dense = DCDDense(100, latent_dim=32, squeeze=32)
    dense.build((None, 1280))
    assert (
        count_madds(dense, (None, 1280))
        == 1280 * 100 + 100 + 1280 * 32 + 32 * 32 + 32 * 100 + 1280 * 32 + 32 * 32 + 32 * 1024 + 32 * 100
    )


def test_dcd_dense_matches_the_official_dycls():
    layer = built(DCDDense(20, latent_dim=4, squeeze=6), (None, 16))
    x = inputs((3, 16))
    w = lambda l: l.kernel.numpy()

    def bn(z, b):
        return (z - b.moving_mean.numpy()) / np.sqrt(
            b.moving_variance.numpy() + 1e-5
        ) * b.gamma.numpy() + b.beta.numpy()

    y = x @ w(layer.fc)
    y = y * hsig2(y @ w(layer.fc_gate))
    phi = (y @ w(layer.fc_phi)).reshape(3, 4, 4)
    r = hsig2(y @ w(layer.fc_scale)) * (x @ w(layer.cls) + layer.cls.bias.numpy())  # the bias is scaled too
    z = bn(x @ w(layer.cls_q), layer.bn1)
    z = bn(np.einsum("nij,nj->ni", phi, z), layer.bn2) + z
    np.testing.assert_allclose(layer(x), r + z @ w(layer.cls_p), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "layer",
    [
        lambda: DCDConv2D(16, latent_dim=4, pool_size=2),
        lambda: DCDConv2D(16, 3, 2, latent_dim=4, blocks=2, attention=False),
        lambda: DCDConv2D(depthwise=True, kernel_size=5, latent_dim=3),
        lambda: DCDConv2D(16, channel_fusion=False, inference_form="parallel"),
    ],
)
def test_keras_file_round_trip_is_exact(tmp_path, layer):
    inp = keras.Input((8, 8, 8))
    x = layer()(inp)
    out = DCDDense(5, latent_dim=4, squeeze=8)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    randomize(model)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    x = inputs((2, 8, 8, 8))
    np.testing.assert_array_equal(restored(x, training=False), model(x, training=False))
    assert restored.layers[1].get_config() == model.layers[1].get_config()


@pytest.mark.parametrize(
    "kwargs, shape, message",
    [
        ({"filters": 16, "blocks": 3}, None, "`filters` (16) must be divisible by `blocks` (3)"),
        ({"filters": 16, "blocks": 2}, (None, 8, 8, 9), "`input channels` (9) must be divisible by `blocks` (2)"),
        (
            {"filters": 16, "latent_dim": 9},
            (None, 8, 8, 8),
            "`latent_dim` must be at most min(C_in, filters)/blocks = 8",
        ),
        ({"filters": 16, "latent_dim": 5, "blocks": 2}, (None, 8, 8, 8), "at most min(C_in, filters)/blocks = 4"),
        (
            {"depthwise": True, "kernel_size": 3, "latent_dim": 9},
            (None, 8, 8, 8),
            "`latent_dim` (L_k) must be in [1, 8]",
        ),
        ({"filters": 16, "latent_dim": 0}, None, "`latent_dim` must be an integer >= 1"),
        ({"filters": 16, "pool_size": 3}, None, "`pool_size` must be one of [1, 2]"),
        ({"filters": 16, "attention": False, "channel_fusion": False}, None, "cannot both be False"),
        ({"filters": 16, "kernel_size": 2}, None, "`kernel_size` must be odd"),
        ({"filters": 16, "kernel_size": 3, "inference_form": "kernel"}, None, "needs a 1×1 form"),
        ({"filters": 16, "inference_form": "fast"}, None, "`inference_form` must be one of"),
        ({}, None, "`filters` is required"),
        ({"depthwise": True, "filters": 4}, (None, 8, 8, 8), "`filters` must be None or the input channels (8)"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, shape, message):
    with pytest.raises(ValueError) as error:
        layer = DCDConv2D(**kwargs)
        layer.build(shape)
    assert message in str(error.value)


def test_dcd_dense_bad_arguments():
    with pytest.raises(ValueError, match=r"`latent_dim` must be at most min\(inputs, units\) = 10"):
        DCDDense(10, latent_dim=32).build((None, 64))
    with pytest.raises(ValueError, match="`units` must be an integer >= 1"):
        DCDDense(0)
    with pytest.raises(ValueError, match=r"\(batch, features\)"):
        DCDDense(10).build((None, 4, 4, 64))
