"""dynzoo.export: from a Keras model to a deployable TFLite (LiteRT) model: conversion in every
quantization mode with builtin ops only, parity checks, latency benchmarks (whole model and per op) and the
deployable bundle."""

from dynzoo.export.benchmark import LatencyComparison, LatencyResult, compare_latency, measure_latency
from dynzoo.export.bundle import preprocess, read_bundle, write_bundle
from dynzoo.export.op_profile import OpProfile, profile_ops
from dynzoo.export.tflite import (
    MODES,
    ExportError,
    convert,
    convert_modes,
    op_counts,
    op_names,
    run_tflite,
    save_for_conversion,
    to_tflite,
)

__all__ = [
    "MODES",
    "ExportError",
    "LatencyComparison",
    "LatencyResult",
    "OpProfile",
    "compare_latency",
    "convert",
    "convert_modes",
    "measure_latency",
    "op_counts",
    "op_names",
    "preprocess",
    "profile_ops",
    "read_bundle",
    "run_tflite",
    "save_for_conversion",
    "to_tflite",
    "write_bundle",
]
