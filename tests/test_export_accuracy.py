"""Accuracy kept by a fully integer export of trained dynamic networks on real data (the offline
digits): top-1 within 1 point of float and ≥ 99% top-1 agreement with the Keras model."""

from __future__ import annotations

import keras
import pytest

from dynzoo.data import digits_arrays
from dynzoo.export import convert
from dynzoo.export.cli import full_range_first
from dynzoo.export.tflite import float_ops
from dynzoo.export.verify import parity_report

SIZE = 32


# DCD-MobileNetV2 ×0.5 is not checked yet: plain Adam at 32×32 leaves it at chance (16 % after 30 epochs),
# so there is no trained model to quantize (benchmarks/results/quantization_accuracy.md).
@pytest.mark.slow
def test_int16x8_keeps_accuracy_of_a_trained_dynamic_network(quickstart_run):
    """The quickstart's MicroNet-M0 (trained on the 32×32 digits) exported fully integer."""
    model = keras.saving.load_model(quickstart_run[2] / "model.keras", compile=False)
    x_train, _ = digits_arrays("train", SIZE)
    x_test, y_test = digits_arrays("test", SIZE)
    flatbuffer = convert(model, "int16x8", full_range_first(x_train[:64].astype("float32")))
    assert float_ops(flatbuffer) == []  # fully integer inside (float only at the I/O edges)
    report = parity_report(model, flatbuffer, x_test.astype("float32"), y_test)
    assert report["keras_accuracy"] > 0.85, report  # the network really learned
    assert abs(report["tflite_accuracy"] - report["keras_accuracy"]) <= 0.01, report
    assert report["top1_agreement"] >= 0.99, report
