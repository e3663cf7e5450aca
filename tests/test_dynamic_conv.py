"""DynamicConv2D (CondConv / DY-Conv as configurations of one layer): both formulations exact and equal,
routing, temperature annealing, sizes, serialization, TFLite, errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from dynzoo.layers import (
    DynamicConv2D,
    SymmetricConv2D,
    SymmetricDepthwiseConv2D,
    TemperatureAnnealing,
    count_madds,
)


def inputs(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def randomize(layer, seed=0):
    rng = np.random.default_rng(seed)
    for v in layer.trainable_weights:
        v.assign(rng.normal(0, 0.5, size=v.shape).astype("float32"))


def pair(**kwargs):
    """The same layer in both formulations, sharing weights."""
    shape = kwargs.pop("shape")
    a = DynamicConv2D(formulation="branches", **kwargs)
    b = DynamicConv2D(formulation="kernel", **kwargs)
    a.build(shape)
    b.build(shape)
    randomize(a)
    b.set_weights(a.get_weights())
    return a, b


CASES = [
    {"filters": 12, "kernel_size": 1, "strides": 1},
    {"filters": 12, "kernel_size": 3, "strides": 1},
    {"filters": 12, "kernel_size": 3, "strides": 2},
    {
        "filters": 12,
        "kernel_size": 5,
        "strides": 2,
        "routing": "sigmoid",
        "reduction": None,
        "experts": 8,
        "use_bias": True,
    },
    {"depthwise": True, "kernel_size": 3, "strides": 1},
    {"depthwise": True, "kernel_size": 5, "strides": 2, "routing": "sigmoid", "reduction": None},
]


@pytest.mark.parametrize("case", CASES)
def test_both_formulations_are_exact_and_agree(case):
    """branches: Σ π_k (W_k * x); kernel: (Σ π_k W_k) * x — and both equal a per-sample static conv."""
    a, b = pair(shape=(None, 9, 9, 8), **case)
    x = inputs((3, 9, 9, 8))
    ya, yb = np.asarray(a(x)), np.asarray(b(x))
    np.testing.assert_allclose(ya, yb, rtol=1e-5, atol=1e-5)
    pi = np.asarray(a.coefficients(x))
    kernel = a.kernel.numpy()
    bias = a.bias.numpy() if a.bias is not None else None
    for n in range(3):  # reference: the aggregated kernel in an ordinary (symmetric-padding) conv
        mixed = np.tensordot(pi[n], kernel, axes=1)
        if a.depthwise:
            conv = SymmetricDepthwiseConv2D(a.kernel_size, a.strides, use_bias=False)
        else:
            conv = SymmetricConv2D(a.filters, a.kernel_size, a.strides, use_bias=False)
        conv.build((None, 9, 9, 8))
        conv.kernel.assign(mixed)
        expected = np.asarray(conv(x[n : n + 1]))[0] + (pi[n] @ bias if bias is not None else 0)
        np.testing.assert_allclose(ya[n], expected, rtol=1e-4, atol=1e-4)


def test_routing_softmax_with_temperature_and_sigmoid():
    dy = DynamicConv2D(8, experts=4, temperature=1.0)
    dy.build((None, 6, 6, 8))
    randomize(dy)
    x = inputs((5, 6, 6, 8))
    pi = np.asarray(dy.coefficients(x))
    np.testing.assert_allclose(pi.sum(axis=1), 1.0, rtol=1e-6)
    dy.set_temperature(1e4)  # a large temperature makes the attention near uniform (thesis §3.1)
    np.testing.assert_allclose(np.asarray(dy.coefficients(x)), 0.25, atol=1e-3)
    cond = DynamicConv2D(8, experts=8, routing="sigmoid", reduction=None)
    cond.build((None, 6, 6, 8))
    randomize(cond)
    pi = np.asarray(cond.coefficients(x))
    assert pi.shape == (5, 8) and pi.min() > 0 and pi.max() < 1
    assert np.abs(pi.sum(axis=1) - pi.sum(axis=1)[0]).max() > 1e-4  # independent gates, not normalised


def test_condconv_and_dyconv_sizes():
    """K·k²·C_in·C_out kernel parameters plus the routing: CondConv one FC, DY-Conv FC(C/4) → FC(K)."""
    cond = DynamicConv2D(64, 3, experts=8, routing="sigmoid", reduction=None)
    cond.build((None, 14, 14, 32))
    assert sum(int(np.prod(w.shape)) for w in cond.trainable_weights) == 8 * 9 * 32 * 64 + 32 * 8 + 8
    dy = DynamicConv2D(64, 3, experts=4, reduction=4)
    dy.build((None, 14, 14, 32))
    assert sum(int(np.prod(w.shape)) for w in dy.trainable_weights) == 4 * 9 * 32 * 64 + (32 * 8 + 8) + (8 * 4 + 4)
    static = 14 * 14 * 64 * 9 * 32
    attention = 8 * (32 + 4)
    assert count_madds(dy, (None, 14, 14, 32)) == 4 * static + 4 * 14 * 14 * 64 + attention
    kernel = DynamicConv2D.from_config({**dy.get_config(), "formulation": "kernel"})
    assert count_madds(kernel, (None, 14, 14, 32)) == static + 4 * 9 * 32 * 64 + attention


def test_temperature_annealing_callback_runs_linearly_during_fit():
    layer = DynamicConv2D(4, experts=4, temperature=30.0, name="dyn")
    model = keras.Sequential([keras.Input((8, 8, 3)), layer, keras.layers.GlobalAveragePooling2D()])
    model.compile("sgd", "mse")
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(layer.temperature.numpy()))

    annealing = TemperatureAnnealing(start=30.0, end=1.0, epochs=2)
    x, y = inputs((8, 8, 8, 3)), inputs((8, 4))
    model.fit(x, y, batch_size=2, epochs=3, callbacks=[annealing, Spy()], verbose=0)  # 4 steps per epoch
    expected = [30.0 - 29.0 * min(step / 8, 1.0) for step in range(12)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)
    assert annealing.value(10) == 1.0


def test_keras_file_round_trip_is_exact_and_keeps_the_temperature(tmp_path):
    inp = keras.Input((8, 8, 6))
    x = DynamicConv2D(None, 3, 2, depthwise=True, experts=3, name="dw")(inp)
    x = DynamicConv2D(10, 1, experts=8, routing="sigmoid", reduction=None, use_bias=True, formulation="kernel")(x)
    model = keras.Model(inp, x)
    for layer in model.layers[1:]:
        randomize(layer)
    model.get_layer("dw").set_temperature(7.5)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    data = inputs((2, 8, 8, 6))
    np.testing.assert_array_equal(restored.predict(data, verbose=0), model.predict(data, verbose=0))
    assert float(restored.get_layer("dw").temperature.numpy()) == 7.5


@pytest.mark.parametrize("formulation, expected_op", [("branches", "CONV_2D"), ("kernel", "BATCH_MATMUL")])
def test_float32_tflite_is_builtin_only_and_matches_keras(formulation, expected_op):
    from dynzoo.export import op_names, run_tflite, to_tflite

    inp = keras.Input((16, 16, 8))
    x = DynamicConv2D(16, 1, experts=4, formulation=formulation)(inp)
    x = DynamicConv2D(None, 3, 2, depthwise=True, experts=4, formulation=formulation)(x)
    x = DynamicConv2D(8, 3, 1, experts=2, formulation=formulation)(x)
    model = keras.Model(inp, x)
    for layer in model.layers[1:]:
        randomize(layer)
    flatbuffer = to_tflite(model)
    ops = op_names(flatbuffer)
    assert expected_op in ops and not any(op.startswith("CUSTOM") for op in ops)
    data = inputs((2, 16, 16, 8))
    expected = model.predict(data, verbose=0)
    assert np.abs(run_tflite(flatbuffer, data) - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"filters": 8, "experts": 0}, "`experts` must be an integer >= 1"),
        ({"filters": 8, "temperature": 0.0}, "`temperature` must be a number > 0"),
        ({"filters": 8, "temperature": -1}, "`temperature` must be a number > 0"),
        ({"filters": 8, "routing": "relu"}, "`routing` must be one of ['softmax', 'sigmoid']"),
        ({"filters": 8, "formulation": "fft"}, "`formulation` must be one of ['branches', 'kernel']"),
        ({"filters": 8, "kernel_size": 4}, "`kernel_size` must be odd"),
        ({"filters": 8, "reduction": 0}, "`reduction` must be an integer >= 1"),
        ({}, "`filters` is required"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError) as error:
        DynamicConv2D(**kwargs)
    assert message in str(error.value)


def test_bad_temperatures_and_shapes_raise_clear_errors():
    layer = DynamicConv2D(4, depthwise=True)
    with pytest.raises(ValueError, match=r"`filters` must be None or the input channels \(8\)"):
        layer.build((None, 8, 8, 8))
    ok = DynamicConv2D(4)
    ok.build((None, 8, 8, 8))
    with pytest.raises(ValueError, match="`temperature` must be > 0"):
        ok.set_temperature(0)
    with pytest.raises(ValueError, match="`start` must be > 0"):
        TemperatureAnnealing(start=0)
    with pytest.raises(ValueError, match="`epochs` must be an integer >= 1"):
        TemperatureAnnealing(epochs=0)
