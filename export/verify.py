"""Parity of a converted model with its Keras original: output error, top-1 agreement, accuracy of
both on labelled data and, for integer modes, the quantization error of every layer."""

from __future__ import annotations

import csv
import io
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from dynzoo.export.bundle import read_bundle
from dynzoo.export.tflite import feed_input, layer_of, run_tflite
from dynzoo.logs import native_stderr_quiet

PER_LAYER_MODES = ("int8", "uint8", "mixed")  # the modes TFLite's QuantizationDebugger instruments


def model_inputs(images: np.ndarray, *, preprocessing_in_model: bool, mean, std) -> np.ndarray:
    """Model inputs from RGB images in [0, 255]: unchanged when the model normalises inside,
    otherwise ``(x / 255 − mean) / std``."""
    x = np.asarray(images, "float32")
    if preprocessing_in_model:
        return x
    return (x / 255.0 - np.asarray(mean, "float32")) / np.asarray(std, "float32")


def tflite_predictor(path: str | os.PathLike, num_threads: int = 2) -> tuple[Callable, int]:
    """(predict, input size) for a ``.tflite`` file or a bundle folder (model.tflite + model_info.json).

    Quantized inputs/outputs are (de)quantized with the tensors' parameters; a bundle whose model does
    not normalise inside gets the ImageNet-style normalisation of its ``model_info.json``.
    """
    from ai_edge_litert.interpreter import Interpreter

    path = Path(path)
    info = None
    if path.is_dir():
        # the checks of the JVM core (hashes, fields, labels, golden files); the bytes checked are the ones run
        flatbuffer, _, info = read_bundle(path)
        path = path / "model.tflite"
    elif path.exists():
        flatbuffer = path.read_bytes()
    else:
        raise ValueError(f"`tflite`: no such file {os.fspath(path)!r}.")
    try:
        with native_stderr_quiet():  # the delegate's "Created … XNNPACK delegate" line
            interpreter = Interpreter(model_content=flatbuffer, num_threads=num_threads)
            interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"`tflite`: {os.fspath(path)!r} is not a valid TFLite model: {e}") from e
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if len(inp["shape"]) != 4 or inp["shape"][1] != inp["shape"][2]:
        raise ValueError(f"`tflite`: expected a square NHWC image input, got shape {list(inp['shape'])}.")
    normalise = info is not None and not info["input"].get("preprocessing_in_model", True)
    mean = np.asarray(info["input"]["mean"], "float32") if normalise else None
    std = np.asarray(info["input"]["std"], "float32") if normalise else None

    def predict(images: np.ndarray) -> np.ndarray:
        results = []
        for image in images:
            x = (image / 255.0 - mean) / std if normalise else image
            feed_input(interpreter, x[None])
            interpreter.invoke()
            y = interpreter.get_tensor(out["index"])[0].astype("float32")
            if np.issubdtype(out["dtype"], np.integer):
                scale, zero = out["quantization"]
                y = (y - zero) * scale
            results.append(y)
        return np.stack(results)

    return predict, int(inp["shape"][1])


def load_images(
    dataset: str, split: str, image_size: int, limit: int | None = None, data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(images float32 (N, S, S, 3) in [0, 255], labels, class names) of a dataset the training CLI
    reads (``digits``, ``folder`` with ``data_dir``, a TFDS name), resized and centre-cropped as for
    evaluation; the first ``limit`` examples in the stored order."""
    from dynzoo.data import eval_dataset, open_source

    source = open_source(dataset, split, data_dir, image_size=image_size)
    images, labels = [], []
    count = 0
    for x, y in eval_dataset(source, image_size, batch_size=64):
        images.append(x.numpy())
        labels.append(y.numpy())
        count += len(y)
        if limit is not None and count >= limit:
            break
    images, labels = np.concatenate(images)[:limit], np.concatenate(labels)[:limit]
    return images, labels.astype("int64"), source.class_names


def parity_report(
    model: keras.Model, flatbuffer: bytes, inputs: np.ndarray, labels: np.ndarray | None = None, *, xnnpack: bool = True
) -> dict[str, Any]:
    """Keras vs TFLite on ``inputs`` (model inputs): ``max_abs_error``, ``relative_error`` (max abs error
    / max |Keras output|), ``top1_agreement`` and, with ``labels``, ``keras_accuracy`` and
    ``tflite_accuracy``."""
    reference = np.asarray(model.predict(inputs, batch_size=64, verbose=0), "float32")
    converted = run_tflite(flatbuffer, inputs, xnnpack=xnnpack)
    error = float(np.abs(converted - reference).max())
    report = {
        "samples": int(len(inputs)),
        "max_abs_error": error,
        "relative_error": error / max(float(np.abs(reference).max()), 1e-12),
        "top1_agreement": float((converted.argmax(-1) == reference.argmax(-1)).mean()),
    }
    if labels is not None:
        report["keras_accuracy"] = float((reference.argmax(-1) == labels).mean())
        report["tflite_accuracy"] = float((converted.argmax(-1) == labels).mean())
    return report


def layer_errors(
    model: keras.Model, mode: str, calibration: np.ndarray, debug: np.ndarray, top: int = 15
) -> list[dict[str, Any]]:
    """Per-layer quantization error of ``mode`` (int8, uint8, mixed: TFLite's QuantizationDebugger on
    the fully int8 model), the ``top`` worst first: for each quantized op, its op, layer and
    ``rmse_per_scale`` (root-mean-square error of its output in units of its quantization step;
    ≈ 0.29 is pure rounding noise)."""
    import tensorflow as tf

    from dynzoo.export.tflite import save_for_conversion

    if mode not in PER_LAYER_MODES:
        raise ValueError(f"per-layer errors are available for {list(PER_LAYER_MODES)}, not {mode!r}.")
    with tempfile.TemporaryDirectory(prefix="dynzoo_debug_") as tmp:
        saved = save_for_conversion(model, os.path.join(tmp, "saved_model"))
        converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in np.asarray(calibration, "float32"))
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=lambda: ([x[None]] for x in np.asarray(debug, "float32")),
        )
        with native_stderr_quiet():  # the calibrator's native progress lines
            debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)  # the public view: op, scale and error of every tensor
    dump.seek(0)
    rows = []
    for row in csv.DictReader(dump):
        rmse, scale = float(row["mean_squared_error"]) ** 0.5, float(row["scale"])
        rows.append(
            {
                "op": row["op_name"],
                "layer": layer_of(row["tensor_name"]),
                "rmse_per_scale": rmse / scale if scale else None,
                "rmse": rmse,
            }
        )
    return sorted(rows, key=lambda r: -(r["rmse_per_scale"] or 0.0))[:top]


def tensor_errors(reference: bytes, quantized: bytes, inputs: np.ndarray) -> list[dict[str, Any]]:
    """Every integer tensor of ``quantized`` against the same-named tensor of ``reference`` (the float32
    flatbuffer of the same model), in execution order: its ``op``, ``layer`` and ``relative_error`` (max
    |dequantized − float| / max |float| over ``inputs``). Works for every integer mode, int16x8 included
    (which the QuantizationDebugger does not instrument): where the error jumps from one op to the next is
    where the quantization goes wrong."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    def interpreter_for(flatbuffer: bytes):
        # builtin kernels only: a delegate would not write the intermediate tensors back
        with warnings.catch_warnings():  # "intended for debugging": that is what this is
            warnings.simplefilter("ignore")
            interpreter = Interpreter(
                model_content=flatbuffer,
                experimental_preserve_all_tensors=True,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            )
        interpreter.allocate_tensors()
        return interpreter

    floats, integers = interpreter_for(reference), interpreter_for(quantized)
    details = integers.get_tensor_details()
    order = [
        (op["op_name"], details[op["outputs"][0]]["name"]) for op in integers._get_ops_details() if op["outputs"].size
    ]
    # integer op outputs with a float twin of the same name, and the twin's index
    twins = {d["name"]: d["index"] for d in floats.get_tensor_details() if d["dtype"] == np.float32}
    compared = [
        d
        for d in details
        if d["name"] in {name for _, name in order}
        and d["name"] in twins
        and np.issubdtype(d["dtype"], np.integer)
        and d["quantization"][0]
    ]
    worst: dict[str, float] = {}
    for sample in np.asarray(inputs, "float32"):
        for interpreter in (floats, integers):
            feed_input(interpreter, sample[None])
            interpreter.invoke()
        for d in compared:
            if not (_readable(integers, d["index"]) and _readable(floats, twins[d["name"]])):
                continue
            got, expected = integers.get_tensor(d["index"]), floats.get_tensor(twins[d["name"]])
            if got.shape != expected.shape:
                continue
            scale, zero = d["quantization"]
            error = np.abs((got.astype("float64") - zero) * scale - expected).max()
            relative = float(error / max(float(np.abs(expected).max()), 1e-12))
            worst[d["name"]] = max(worst.get(d["name"], 0.0), relative)
    return [{"op": op, "layer": layer_of(name), "relative_error": worst[name]} for op, name in order if name in worst]


def _readable(interpreter, index: int) -> bool:
    try:
        return interpreter.get_tensor(index) is not None
    except ValueError:  # a tensor without data (e.g. an optional input)
        return False
