"""Accuracy kept by a fully integer (int16x8) export of a trained network on real data (the offline
digits): top-1 within ``max_delta`` of float and at least ``min_agreement`` top-1 agreement with Keras."""

from __future__ import annotations

from dynzoo.data import digits_arrays
from dynzoo.export import convert
from dynzoo.export.cli import full_range_first
from dynzoo.export.tflite import float_ops
from dynzoo.export.verify import parity_report

SIZE = 32


def check_int16x8(model, min_accuracy: float, max_delta: float = 0.01, min_agreement: float = 0.99) -> None:
    x_train, _ = digits_arrays("train", SIZE)
    x_test, y_test = digits_arrays("test", SIZE)
    flatbuffer = convert(model, "int16x8", full_range_first(x_train[:64].astype("float32")))
    assert float_ops(flatbuffer) == []  # fully integer inside (float only at the I/O edges)
    report = parity_report(model, flatbuffer, x_test.astype("float32"), y_test)
    assert report["keras_accuracy"] > min_accuracy, report  # the network really learned
    assert abs(report["tflite_accuracy"] - report["keras_accuracy"]) <= max_delta, report
    assert report["top1_agreement"] >= min_agreement, report
