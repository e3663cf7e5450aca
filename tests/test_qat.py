"""Quantization-aware training (``dynzoo.export.qat``): the fake quantizer rounds to the 8-bit grid of
the measured range, reaches the tensors inside the dynamic layers, fine-tunes a trained network on the
digits and hands it to the int8 export; ``dynzoo export --qat-epochs``; clear errors."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from dynzoo.data import digits_arrays
from dynzoo.export import convert, run_tflite
from dynzoo.export.qat import _FakeQuantizer, fake_quantized, quantization_aware_training
from dynzoo.layers import DCDConv2D, DynamicShiftMax
from dynzoo.train.optimizers import FusedAdam

SIZE = 8


def dynamic_net() -> keras.Model:
    """Conv → BN → ReLU → Dynamic Shift-Max → DCD 1×1 (per-sample kernel form) → BN → GAP → Dense; the
    layers the tests look for are named, since automatic names depend on what the process built before."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 16.0)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv2d")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = DynamicShiftMax(reduction=4, shift_groups=2, name="dynamic_shift_max")(x)
    x = DCDConv2D(16, latent_dim=4, inference_form="kernel", name="dcd_conv2d")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="dense")(x))


@pytest.fixture(scope="module")
def digits():
    (x_train, y_train), (x_test, y_test) = digits_arrays("train", SIZE), digits_arrays("test", SIZE)
    return x_train.astype("float32"), y_train, x_test.astype("float32"), y_test


@pytest.fixture(scope="module")
def trained(digits):
    x_train, y_train, _, _ = digits
    keras.utils.set_random_seed(0)
    model = dynamic_net()
    model.compile(FusedAdam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, batch_size=32, epochs=8, verbose=0)
    return model


def test_a_marked_tensor_is_rounded_to_the_8_bit_grid_of_its_range():
    quantizer = _FakeQuantizer()
    layer = keras.layers.Identity()
    x = np.linspace(-1.0, 3.0, 1000, dtype="float32")
    with quantizer.active(observing=True):
        assert np.array_equal(quantizer(layer, x, "t"), x)  # observing changes nothing
    quantizer.assign_ranges()
    with quantizer.active(observing=False):
        y = keras.ops.convert_to_numpy(quantizer(layer, x, "t"))
    step = 4.0 / 255
    assert len(np.unique(y)) <= 256 and np.abs(y - x).max() <= step / 2 + 1e-6
    assert np.allclose((y - y.min()) / step, np.round((y - y.min()) / step), atol=1e-3)
    with quantizer.active(observing=False), pytest.raises(RuntimeError, match="appeared in training"):
        quantizer(layer, x, "never measured")


@pytest.mark.slow
def test_the_fake_quantized_graph_reaches_inside_the_dynamic_layers(trained, digits):
    quantizer = _FakeQuantizer()
    graph = fake_quantized(trained, quantizer)
    assert {id(w) for w in graph.weights} == {id(w) for w in trained.weights}  # the same layers, shared
    with quantizer.active(observing=True):
        graph(digits[2][:16], training=False)
    labels = set(quantizer.labels.values())
    assert {
        "dynamic_shift_max/a",
        "dynamic_shift_max/matrix",
        "dynamic_shift_max/fusion2",
        "dcd_conv2d/kernel",
        "dcd_conv2d/phi",
        "dynamic_shift_max_quant/output",
        "dense_quant/output",
    } <= labels, labels
    # fused into the op before them by the converter: the conv's and the DCD layer's outputs, before their BN
    assert "conv2d_quant/output" not in labels and "dcd_conv2d_quant/output" not in labels


@pytest.mark.slow
def test_qat_fine_tunes_and_the_int8_export_follows_it(trained, digits):
    x_train, y_train, x_test, y_test = digits
    tuned = keras.models.clone_model(trained)
    tuned.set_weights(trained.get_weights())
    before = [w.copy() for w in tuned.get_weights()]
    result = quantization_aware_training(tuned, x_train, y_train, epochs=2, learning_rate=1e-3, verbose=0)
    assert result.model is tuned and len(result.losses) == 2 and np.isfinite(result.losses).all()
    assert result.points > len(trained.layers)  # internal tensors, not only layer outputs
    assert any(not np.array_equal(a, b) for a, b in zip(before, tuned.get_weights(), strict=False))
    keras_logits = tuned.predict(x_test, verbose=0)
    int8 = run_tflite(convert(tuned, "int8", representative_data=x_train[:128]), x_test)
    keras_top1 = (keras_logits.argmax(-1) == y_test).mean()
    assert keras_top1 >= 0.8, keras_top1  # fine-tuning kept the network; measured: 0.838, int8 agreement 0.971
    assert (int8.argmax(-1) == keras_logits.argmax(-1)).mean() >= 0.9  # and int8 follows it


def test_qat_checks_its_arguments(trained, digits):
    x, y = digits[0][:8], digits[1][:8]
    for kwargs, message in (
        ({"images": x[..., :1]}, "`images` must have shape"),
        ({"labels": y[:4]}, "`labels` must be 8 integer"),
        ({"labels": y + 10}, r"`labels` must lie in \[0, 10\)"),
        ({"epochs": 0}, "`epochs` must be an integer >= 1"),
        ({"learning_rate": 0.0}, "`learning_rate` must be > 0"),
    ):
        arguments = {"images": x, "labels": y, **kwargs}
        with pytest.raises(ValueError, match=message):
            quantization_aware_training(trained, arguments.pop("images"), arguments.pop("labels"), **arguments)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="needs a functional keras.Model"):
        fake_quantized(Subclassed(), _FakeQuantizer())


@pytest.mark.slow
def test_cli_export_with_qat(trained, tmp_path, capsys):
    from dynzoo.cli import main

    path = tmp_path / "net.keras"
    trained.save(path)
    assert main(["export", str(path), "--mode", "int8", "--qat-epochs", "1", "-o", str(tmp_path / "out")]) == 0
    assert "QAT: " in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "net_report.json").read_text())
    assert report["qat"]["epochs"] == 1 and len(report["qat"]["losses"]) == 1
    assert (tmp_path / "out" / "net_int8.tflite").stat().st_size > 0
    assert main(["export", str(path), "--qat-epochs", "-1"]) == 2
    assert "--qat-epochs must be >= 0" in capsys.readouterr().err
