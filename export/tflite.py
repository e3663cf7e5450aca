"""Float32 conversion to TFLite with builtin ops only, the op list of a flatbuffer, and running it."""

from __future__ import annotations

import collections

import keras
import numpy as np


class ExportError(RuntimeError):
    """The model cannot be converted with TFLite builtin ops only (the message names the ops)."""


def to_tflite(model: keras.Model) -> bytes:
    """Convert ``model`` to a float32 ``.tflite`` flatbuffer that uses TFLite builtin ops only.

    Converts from the Keras model itself (the concrete-function path keeps variables and unfolded
    BatchNorm and runs several times slower). Raises :class:`ExportError` naming any op that would
    need Flex (TF Select) or a custom op.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        flatbuffer = converter.convert()
    except Exception as e:  # the converter raises ConverterError with the list of unsupported ops
        raise ExportError(f"{model.name} does not convert to TFLite builtin ops: {e}") from e
    custom = [op for op in op_names(flatbuffer) if op.startswith(("CUSTOM", "FLEX"))]
    if custom:
        raise ExportError(f"{model.name} converted with non-builtin ops: {sorted(set(custom))}")
    return flatbuffer


def op_names(flatbuffer: bytes) -> list[str]:
    """The builtin-op name of every operator in the main subgraph, in execution order
    (``CUSTOM:<name>`` for custom and Flex ops)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == schema.BuiltinOperator.CUSTOM:
            ops.append(f"CUSTOM:{code.customCode.decode()}")
        else:
            ops.append(names[builtin])
    return ops


def op_counts(flatbuffer: bytes) -> dict[str, int]:
    return dict(collections.Counter(op_names(flatbuffer)))


def run_tflite(flatbuffer: bytes, inputs: np.ndarray, num_threads: int = 1) -> np.ndarray:
    """Run the flatbuffer on a batch with the LiteRT interpreter, one sample at a time."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=num_threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    results = []
    for sample in np.asarray(inputs):
        interpreter.set_tensor(inp["index"], sample[None].astype(inp["dtype"]))
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(results)
