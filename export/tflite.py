"""Conversion of Keras models to TFLite (LiteRT) flatbuffers with builtin ops only, in every
quantization mode, plus the op list of a flatbuffer and running it.

The Keras model is exported once to a batch-1 SavedModel (:func:`save_for_conversion`), which is then
converted in any number of modes (:func:`convert`): conversion from the Keras model (or its SavedModel)
folds BatchNorm and variables; the concrete-function path does not and runs several times slower.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from dynzoo._compat import all_layers, snake_case
from dynzoo.export.flatbuffer import fit_xnnpack_scales, operator_name, read_model, unshare_biases
from dynzoo.layers.base import export_form, has_integer_export_form
from dynzoo.layers.shift_max import shift_max_form
from dynzoo.logs import native_stderr_quiet

MODES = ("float32", "float16", "dynamic", "int8", "uint8", "int16x8", "mixed")
INTEGER_MODES = ("int8", "uint8", "int16x8")  # every op runs on integers (float I/O only for int16x8)
INT8_MODES = ("int8", "uint8")  # traced in the full-integer export form, for XNNPACK's int8 kernels
CALIBRATED_MODES = ("int8", "uint8", "int16x8", "mixed")
# Ops that only move data between float and integer at the model's edges.
BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}
# Element-wise ops of the dynamic re-weighting that mixed mode keeps in float (toolchain probe: int8
# loses 15–20 points on exactly these).
FLOAT_ISLAND_OPS = ("MUL", "ADD", "SUB", "MAXIMUM")


class ExportError(RuntimeError):
    """The model cannot be converted as asked (the message names the ops and the layers)."""


def save_for_conversion(
    model: keras.Model, directory: str | os.PathLike, batch_size: int = 1, *, integer: bool = False
) -> Path:
    """Export ``model`` (inference mode, static batch) as a SavedModel that :func:`convert` reads.

    ``integer``: trace the layers in their full-integer export form (``export_form(integer=True)``).
    A plain ``tf.Module`` with one traced function: Keras's ``ExportArchive`` traces the model three
    times, which made saving about twice as slow for the dynamic networks, whose graphs are large."""
    import tensorflow as tf

    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ValueError(f"{model.name}: the input shape {shape} must be fully known to export.")
    module = tf.Module()
    # The backing tf.Variables, so that the SavedModel holds their values for the converter to fold.
    module.model_variables = [v.value for v in model.variables]
    module.serve = tf.function(
        functools.partial(model.__call__, training=False),
        input_signature=[tf.TensorSpec((batch_size, *shape), tf.float32, name="image")],
    )
    with export_form(integer):  # one convolution per layer, what the converter and XNNPACK run fastest
        tf.saved_model.save(module, os.fspath(directory), signatures={"serve": module.serve.get_concrete_function()})
    return Path(directory)


def convert(
    model: keras.Model,
    mode: str = "float32",
    representative_data: np.ndarray | None = None,
    *,
    saved_model: str | os.PathLike | None = None,
    float_island_scopes: Sequence[str] | None = None,
) -> bytes:
    """Convert a Keras model to a ``.tflite`` flatbuffer (batch 1) in one of the :data:`MODES`.

    Modes:
        ``float32``; ``float16`` (weights in fp16); ``dynamic`` (int8 weights, float activations);
        ``int8`` / ``uint8`` (everything int8, int8 or uint8 input and output); ``int16x8`` (int16
        activations, int8 weights, float I/O); ``mixed`` (int8, with the element-wise ops of the dynamic
        layers — ``float_island_scopes`` — kept in float; a model without dynamic layers is plain int8
        with float I/O).

    Args:
        model: the Keras model.
        mode: one of :data:`MODES`.
        representative_data: (N, H, W, 3) float32 model inputs for calibration (calibrated modes).
        saved_model: the model's SavedModel from :func:`save_for_conversion`, to convert one export
            in several modes (default: export it now). int8, uint8 and int16x8 re-export where they
            need their own form (:func:`exportable`; the layers' full-integer export form for int8 and
            uint8, Dynamic Shift-Max element-wise for int16x8).
        float_island_scopes: name fragments of the layers whose element-wise ops ``mixed`` keeps in
            float; default: the dynamic layers (:func:`dynamic_scopes`).

    Raises:
        ExportError: when an op would need Flex/TF Select or a custom op, or (integer modes) when an
            op would stay in float; the message names the op and the layer it came from.
    """
    import tensorflow as tf

    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {list(MODES)}, got {mode!r}.")
    if mode in CALIBRATED_MODES and (representative_data is None or len(representative_data) == 0):
        raise ValueError(f"mode {mode!r} needs `representative_data` (calibration inputs).")
    label = model.name
    if mode == "mixed" and float_island_scopes is None:
        float_island_scopes = dynamic_scopes(model)
    # int16x8 traces Dynamic Shift-Max element-wise: TFLite's int16 kernels aborted the process (SIGABRT)
    # on its matrix form (a randomly initialised MicroNet-M0; one layer for some calibration ranges)
    element_wise = mode == "int16x8" and any(getattr(layer, "uses_matrix_form", False) for layer in all_layers(model))
    # int8 traces the layers that have a full-integer form in it (Dynamic Shift-Max: element-wise, its max
    # without MAXIMUM), so that XNNPACK takes every int8 op (benchmarks/int8_delegation.py)
    integer = mode in INT8_MODES and any(has_integer_export_form(layer) for layer in all_layers(model))
    with tempfile.TemporaryDirectory(prefix="dynzoo_export_") as tmp:
        friendly = exportable(model, mode)
        if saved_model is None or friendly is not model or element_wise or integer:
            with shift_max_form(matrix=False) if element_wise else contextlib.nullcontext():
                saved = save_for_conversion(friendly, Path(tmp) / "saved_model", integer=mode in INT8_MODES)
        else:
            saved = Path(saved_model)
        converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if mode != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if mode in CALIBRATED_MODES:
            data = np.asarray(representative_data, "float32")
            converter.representative_dataset = lambda: ([x[None]] for x in data)
        if mode in ("int8", "uint8"):
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = converter.inference_output_type = getattr(tf, mode)
        elif mode == "int16x8":
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
        try:
            with native_stderr_quiet():  # the converter's and calibrator's native progress lines
                if mode == "mixed":
                    flatbuffer = _convert_mixed(converter, saved, data, float_island_scopes)
                else:
                    flatbuffer = converter.convert()
        except Exception as e:  # ConverterError lists the unsupported ops with their locations
            raise ExportError(
                f"{label}: conversion to {mode} with TFLite builtin ops failed: {_short_converter_error(e)}"
            ) from e
    if mode == "int16x8":
        flatbuffer = unshare_biases(flatbuffer)
    elif mode in INT8_MODES:
        flatbuffer = fit_xnnpack_scales(flatbuffer)
    check_builtin_only(flatbuffer, label)
    if mode in INTEGER_MODES:
        check_integer_only(flatbuffer, label, mode)
    return flatbuffer


def exportable(model: keras.Model, mode: str) -> keras.Model:
    """``model``, or for the integer modes an exactly equivalent clone whose hard-swish activations are
    written in a form that the mode's kernels take (:data:`HARD_SWISH_FORMS`)."""
    form = HARD_SWISH_FORMS.get(mode)
    if form is None or not any(_is_hard_swish(layer) for layer in model.layers):
        return model

    def clone(layer):
        if _is_hard_swish(layer):
            return keras.layers.Lambda(form, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _is_hard_swish(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.Activation) and layer.activation is keras.activations.hard_swish


def _piecewise_hard_swish(x):
    """``x · (relu(x + 3) − relu(x − 3)) / 6``: TFLite has no int16 HARD_SWISH kernel, and this form is not
    fused back into one."""
    from keras import ops

    return x * (ops.relu(x + 3.0) - ops.relu(x - 3.0)) * (1.0 / 6.0)


def _product_hard_swish(x):
    """``relu6(x + 3) · x / 6``: XNNPACK has no int8 HARD_SWISH (each split the graph), and in this order the
    converter does not fuse it back into one; it becomes an ADD with a fused RELU6 and a MUL, whose
    ``1/6`` the int8 converter folds into the output scale (the relu pieces of int16x8 left a SUB whose
    input and output scales XNNPACK refuses when ``x`` stays below 3 in calibration)."""
    from keras import ops

    return ops.relu6(x + 3.0) * x / 6.0


HARD_SWISH_FORMS = {"int16x8": _piecewise_hard_swish, "int8": _product_hard_swish, "uint8": _product_hard_swish}


def to_tflite(model: keras.Model) -> bytes:
    """Float32 ``.tflite`` of ``model`` with TFLite builtin ops only (:func:`convert` in float32 mode)."""
    return convert(model, "float32")


def dynamic_scopes(model: keras.Model) -> list[str]:
    """Snake-case class names of the model's dynamic layers (those exposing ``coefficients``), the
    name fragments their TFLite tensors carry."""
    scopes = set()
    for layer in all_layers(model, include_self=False, recursive=True):
        if callable(getattr(layer, "coefficients", None)):
            scopes.add(snake_case(type(layer).__name__))
    return sorted(scopes)


def _convert_mixed(converter, saved: Path, data: np.ndarray, scopes: Sequence[str]) -> bytes:
    """int8 with the element-wise ops of ``scopes`` kept in float (QuantizationDebugger's selective
    quantization: calibrate once, then quantize all but the denylisted nodes)."""
    import tensorflow as tf

    float_model = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved)).convert()
    nodes = [t for op, t in op_outputs(float_model) if op in FLOAT_ISLAND_OPS and any(s in t for s in scopes)]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=lambda: ([x[None]] for x in data[:1]),
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes),
    )
    return debugger.get_nondebug_quantized_model()


def _short_converter_error(e: Exception) -> str:
    """The ops the converter rejected, each with the Keras layer it came from, and its summary lines."""
    text = str(e)
    rejected = []
    for op, path in re.findall(r'fused\["(\w+):", "([^"@]+)', text):
        item = f"{op} (layer {layer_of(path)})"
        if f"'tf.{op}'" in text and item not in rejected:
            rejected.append(item)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    summary = [ln for ln in lines if "Select ops:" in ln or "not supported for op" in ln or "not supported" in ln]
    parts = ([f"ops without a TFLite builtin: {', '.join(rejected)}"] if rejected else []) + summary[:3]
    return " | ".join(parts or lines[:3])


def op_names(flatbuffer: bytes) -> list[str]:
    """The builtin-op name of every operator in the main subgraph, in execution order
    (``CUSTOM:<name>`` for custom and Flex ops)."""
    schema, model = read_model(flatbuffer)
    return [operator_name(schema, model, op) for op in model.subgraphs[0].operators]


def op_counts(flatbuffer: bytes) -> dict[str, int]:
    return dict(collections.Counter(op_names(flatbuffer)))


def op_outputs(flatbuffer: bytes) -> list[tuple[str, str]]:
    """(op name, name of its first output tensor) for every operator, in execution order."""
    schema, model = read_model(flatbuffer)
    graph = model.subgraphs[0]
    return [(operator_name(schema, model, op), graph.tensors[op.outputs[0]].name.decode()) for op in graph.operators]


def layer_of(tensor_name: str) -> str:
    """The Keras layer path a TFLite tensor came from (``block3/dynamic_shift_max``): the name scope
    without the model prefix and TF's ``_1`` uniquifying suffixes. A tensor of fused ops (``conv;relu``)
    names each layer involved, joined by `` + ``."""
    layers = []
    for name in tensor_name.split(";"):
        parts = [re.sub(r"_\d+$", "", p) for p in name.split("/")[:-1]]
        layer = "/".join(parts[1:])
        if layer and layer not in layers:
            layers.append(layer)
    return " + ".join(layers) or tensor_name


def check_builtin_only(flatbuffer: bytes, label: str) -> None:
    custom = [(op, t) for op, t in op_outputs(flatbuffer) if op.startswith("CUSTOM")]
    if custom:
        found = sorted({f"{op} (layer {layer_of(t)})" for op, t in custom})
        raise ExportError(f"{label}: converted with non-builtin ops: {', '.join(found)}")


def float_ops(flatbuffer: bytes) -> list[tuple[str, str]]:
    """(op, layer) of every op that computes in float (a float32 input or output), edge
    QUANTIZE/DEQUANTIZE excepted."""
    schema, model = read_model(flatbuffer)
    graph = model.subgraphs[0]
    found = []
    for op in graph.operators:
        name = operator_name(schema, model, op)
        if name in BOUNDARY_OPS:
            continue
        tensors = [graph.tensors[i] for i in list(op.inputs) + list(op.outputs) if i >= 0]
        if any(t.type == schema.TensorType.FLOAT32 for t in tensors):
            found.append((name, layer_of(graph.tensors[op.outputs[0]].name.decode())))
    return found


def check_integer_only(flatbuffer: bytes, label: str, mode: str) -> None:
    found = float_ops(flatbuffer)
    if found:
        listed = ", ".join(f"{op} (layer {layer})" for op, layer in sorted(set(found)))
        raise ExportError(f"{label}: in mode {mode!r} these ops fall back to float: {listed}")


def feed_input(interpreter, x: np.ndarray) -> None:
    """Set the interpreter's (first) input to the float array ``x``, quantized with the input's own scale
    and zero point when the model takes integers."""
    detail = interpreter.get_input_details()[0]
    if np.issubdtype(detail["dtype"], np.integer):
        scale, zero = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        x = np.clip(np.round(x / scale) + zero, info.min, info.max)
    interpreter.set_tensor(detail["index"], np.asarray(x).astype(detail["dtype"]))


def run_tflite(flatbuffer: bytes, inputs: np.ndarray, num_threads: int = 1, xnnpack: bool = True) -> np.ndarray:
    """Run the flatbuffer on a batch of float inputs with the LiteRT interpreter, one sample at a time.

    Integer inputs are quantized and integer outputs dequantized with the model's own scale and zero
    point, so the result is comparable with the Keras model's output.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with native_stderr_quiet():  # the delegate's "Created … XNNPACK delegate" line
        interpreter = Interpreter(
            model_content=flatbuffer, num_threads=num_threads, experimental_op_resolver_type=resolver
        )
        interpreter.allocate_tensors()
    out = interpreter.get_output_details()[0]
    out_scale, out_zero = out["quantization"]
    results = []
    for sample in np.asarray(inputs):
        feed_input(interpreter, sample[None])
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0].copy()
        if np.issubdtype(out["dtype"], np.integer):
            y = (y.astype("float32") - out_zero) * out_scale
        results.append(y)
    return np.stack(results)


def convert_modes(
    model: keras.Model,
    modes: Sequence[str],
    representative_data: np.ndarray | None = None,
    *,
    float_island_scopes: Sequence[str] | None = None,
) -> dict[str, bytes]:
    """``{mode: flatbuffer}`` for several modes from one SavedModel export of ``model``."""
    with tempfile.TemporaryDirectory(prefix="dynzoo_export_") as tmp:
        saved = save_for_conversion(model, Path(tmp) / "saved_model")
        return {
            mode: convert(model, mode, representative_data, saved_model=saved, float_island_scopes=float_island_scopes)
            for mode in modes
        }


def full_range_first(images: np.ndarray) -> np.ndarray:
    """Calibration images with one extra image spanning 0…255 first, so that a uint8 input of a model
    that normalises inside gets scale 1 and zero point 0: an app then feeds raw pixels unchanged."""
    ramp = np.linspace(0.0, 255.0, images[0].size, dtype="float32").reshape(images[0].shape)
    return np.concatenate([ramp[None], images])


def output_activation(model) -> str:
    """``"softmax"`` when ``model`` ends in a softmax (its output is probabilities), else ``"none"`` (logits)."""
    last = model.layers[-1]
    return "softmax" if getattr(getattr(last, "activation", None), "__name__", "") == "softmax" else "none"
