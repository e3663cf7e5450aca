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


@pytest.mark.slow
@pytest.mark.xdist_group("quickstart")  # the same worker as test_quickstart: one fixture build
def test_int16x8_keeps_accuracy_of_a_trained_micronet(quickstart_run):
    """The quickstart's MicroNet-M0 (trained on the 32×32 digits) exported fully integer."""
    model = keras.saving.load_model(quickstart_run[2] / "model.keras", compile=False)
    _check_int16x8(model, min_accuracy=0.85)


@pytest.mark.slow
@pytest.mark.xdist_group("trained_dcd")  # the same worker as test_train's DCD: one fixture build
def test_int16x8_of_a_trained_dcd_network_tracks_float(trained_dcd):
    """DCD-MobileNetV2 ×0.5 (the training tests' run) exported fully integer. Before the shared biases
    were repaired (``unshare_biases``) it fell to chance (12 % top-1 agreement). This network is only
    trained to ~66 % (6 epochs), so many test images sit on a decision boundary: the check here is 97 %
    agreement and 2 points; the issue's 1 point / 99 % is measured on the 30-epoch network by
    ``benchmarks/quantization_accuracy.py`` (int16x8: 100 % agreement, +0.0 points)."""
    _check_int16x8(trained_dcd.model, min_accuracy=0.5, max_delta=0.02, min_agreement=0.97)


def _check_int16x8(model, min_accuracy: float, max_delta: float = 0.01, min_agreement: float = 0.99) -> None:
    x_train, _ = digits_arrays("train", SIZE)
    x_test, y_test = digits_arrays("test", SIZE)
    flatbuffer = convert(model, "int16x8", full_range_first(x_train[:64].astype("float32")))
    assert float_ops(flatbuffer) == []  # fully integer inside (float only at the I/O edges)
    report = parity_report(model, flatbuffer, x_test.astype("float32"), y_test)
    assert report["keras_accuracy"] > min_accuracy, report  # the network really learned
    assert abs(report["tflite_accuracy"] - report["keras_accuracy"]) <= max_delta, report
    assert report["top1_agreement"] >= min_agreement, report
