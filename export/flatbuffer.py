"""Reading, editing and writing TFLite flatbuffers (the schema's object API), and the passes the exporter
applies to a converted model: each changes only quantization parameters or constants, never the ops."""

from __future__ import annotations

import collections
from copy import deepcopy

import numpy as np

# Ops whose input 2 is a bias quantized with scale input_scale × weight_scale (per output channel).
BIAS_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")

# XNNPACK takes an int8 ADD or SUB only when each input's scale over the output's scale lies in
# [1/1024, 256), and an int8 MUL only when the product of the input scales over the output's lies in
# [1/65536, 256) (TFLite's xnnpack_delegate.cc); outside, the op runs on LiteRT's builtin kernel and
# splits the graph.
ADD_SCALE_RATIO = (1.0 / 1024.0, 256.0)
MUL_SCALE_RATIO = (1.0 / 65536.0, 256.0)
# Ops whose kernel requantizes its result to whatever scale its output tensor declares, so that the scale
# may be raised freely (a RESHAPE or CONCATENATION copies bytes and must keep its input's parameters; a
# LOGISTIC or SOFTMAX has a fixed output scale).
REQUANTIZING_OPS = ("ADD", "SUB", "MUL", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MEAN")


def is_tflite(data: bytes) -> bool:
    """Whether ``data`` starts like a TFLite flatbuffer (its ``TFL3`` file identifier)."""
    return len(data) >= 8 and data[4:8] == b"TFL3"


def read_model(flatbuffer: bytes):
    """(the schema module, the model as the schema's mutable object tree ``ModelT``).

    Raises:
        ValueError: ``flatbuffer`` is not a TFLite model."""
    from ai_edge_litert import schema_py_generated as schema

    if not is_tflite(flatbuffer):
        raise ValueError("not a TFLite flatbuffer (no 'TFL3' identifier).")
    return schema, schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))


def write_model(model) -> bytes:
    """The flatbuffer of an object tree from :func:`read_model`."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def operator_name(schema, model, op) -> str:
    """The builtin-op name of ``op`` (``CUSTOM:<name>`` for custom and Flex ops)."""
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == schema.BuiltinOperator.CUSTOM:
        return f"CUSTOM:{code.customCode.decode()}"
    return names.get(builtin, str(builtin))


def unshare_biases(flatbuffer: bytes) -> bytes:
    """Give every op its own correctly scaled bias where the int16x8 converter shares one.

    The converter deduplicates equal float constants, so layers with the same bias values (DCD's folded
    ``+3`` of every hard-sigmoid gate, its identity term) end up reading one bias tensor; in int16x8 mode
    (unlike int8) that int64 tensor is quantized once, with the first consumer's ``input_scale ×
    weight_scale``, and every other consumer reads values off by its ratio of scales — DCD-MobileNetV2
    collapsed to chance. Each other consumer gets a copy requantized with its own scale (the float values
    are recovered exactly enough: int64 steps of ~1e-8)."""
    schema, model = read_model(flatbuffer)
    graph = model.subgraphs[0]
    consumers = collections.defaultdict(list)
    for op in graph.operators:
        if operator_name(schema, model, op) in BIAS_OPS and len(op.inputs) > 2 and op.inputs[2] >= 0:
            consumers[op.inputs[2]].append(op)
    changed = False
    for index, ops in consumers.items():
        bias = graph.tensors[index]
        if len(ops) < 2 or bias.type not in (schema.TensorType.INT64, schema.TensorType.INT32):
            continue
        dtype = np.int64 if bias.type == schema.TensorType.INT64 else np.int32
        raw = np.frombuffer(bytes(model.buffers[bias.buffer].data), dtype)
        if not raw.any():  # zeros are zeros at any scale
            continue
        stored = np.asarray(bias.quantization.scale, "float64")  # per channel, or one per-tensor scale
        values = raw * np.broadcast_to(stored, raw.shape)
        for op in ops:
            scale = np.broadcast_to(
                np.asarray(graph.tensors[op.inputs[0]].quantization.scale, "float64")
                * np.asarray(graph.tensors[op.inputs[1]].quantization.scale, "float64"),
                stored.shape,
            )
            if np.allclose(scale, stored, rtol=1e-6, atol=0):
                continue
            copy = deepcopy(bias)
            copy.quantization.scale = scale.astype("float32")
            quantized = np.round(values / np.broadcast_to(scale, raw.shape)).astype(dtype)
            copy.buffer = _append_buffer(schema, model, quantized)
            graph.tensors.append(copy)
            op.inputs = np.array(op.inputs, dtype=np.int32)  # writable copy
            op.inputs[2] = len(graph.tensors) - 1
            changed = True
    return write_model(model) if changed else flatbuffer


def fit_xnnpack_scales(flatbuffer: bytes, max_passes: int = 8) -> bytes:
    """Raise int8 scales where an ADD, SUB or MUL breaks XNNPACK's scale-ratio rule (:data:`ADD_SCALE_RATIO`,
    :data:`MUL_SCALE_RATIO`), so that XNNPACK takes the op and the graph stays in one partition.

    Calibration gives a term that is nearly always zero a tiny scale: Dynamic Shift-Max's ``b · x̂`` while
    ``b`` is near its initial 0, the ``relu(b − a)`` of its max when one fusion dominates. Adding it to a
    tensor of ordinary range breaks the 1/1024 bound. Raising the small scale to the bound coarsens that
    input to 1/1024 of the output's step, far below the output's own rounding; the values it can
    represent only grow (the zero point is kept), so nothing is clipped. An output whose scale is too
    small for its inputs is raised the same way. Only the outputs of ops that requantize
    (:data:`REQUANTIZING_OPS`) and per-tensor int8 constants (requantized) are changed; a change can
    break the rule at a neighbouring op, so the pass repeats until nothing changes.
    """
    schema, model = read_model(flatbuffer)
    graph = model.subgraphs[0]
    producer = {out: op for op in graph.operators for out in op.outputs}
    changed = False
    for _ in range(max_passes):
        changed_now = False
        for op in graph.operators:
            name = operator_name(schema, model, op)
            if name not in ("ADD", "SUB", "MUL") or not all(
                _int8_per_tensor(schema, graph.tensors[i]) for i in (*op.inputs, *op.outputs)
            ):
                continue
            out = graph.tensors[op.outputs[0]]
            inputs = [graph.tensors[i] for i in op.inputs]
            if name == "MUL":
                low, high = MUL_SCALE_RATIO
                ratio = _scale(inputs[0]) * _scale(inputs[1]) / _scale(out)
                if ratio < low:  # raise the smaller-range input's scale to bring the product up
                    index = min(op.inputs, key=lambda i: _scale(graph.tensors[i]))
                    target = _scale(graph.tensors[index]) * low / ratio
                    changed_now |= _raise_scale(schema, model, producer, index, target)
                elif ratio >= high:
                    changed_now |= _raise_scale(schema, model, producer, op.outputs[0], _scale(out) * ratio / high)
                continue
            low, high = ADD_SCALE_RATIO
            for index, tensor in zip(op.inputs, inputs, strict=False):
                if _scale(tensor) / _scale(out) < low:
                    changed_now |= _raise_scale(schema, model, producer, index, _scale(out) * low)
            largest = max(_scale(t) for t in inputs)
            if largest / _scale(out) >= high:
                changed_now |= _raise_scale(schema, model, producer, op.outputs[0], largest / high)
        changed |= changed_now
        if not changed_now:
            break
    return write_model(model) if changed else flatbuffer


def _int8_per_tensor(schema, tensor) -> bool:
    q = tensor.quantization
    return tensor.type == schema.TensorType.INT8 and q is not None and q.scale is not None and len(q.scale) == 1


def _scale(tensor) -> float:
    return float(tensor.quantization.scale[0])


def _raise_scale(schema, model, producer, index: int, target: float) -> bool:
    """Give tensor ``index`` the scale ``target`` (a hair above, so that the bound holds in float32) if it
    is larger than its scale and the tensor may change (module comment); True if it changed."""
    graph = model.subgraphs[0]
    tensor = graph.tensors[index]
    new = float(np.nextafter(np.float32(target), np.float32(np.inf)) * np.float32(1.0 + 1e-6))
    old = _scale(tensor)
    if new <= old:
        return False
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    if data is not None and len(data):  # a constant: requantize its values to the coarser step
        zero = int(tensor.quantization.zeroPoint[0])
        values = (np.frombuffer(bytes(data), np.int8).astype("float64") - zero) * old
        requantized = np.clip(np.round(values / new) + zero, -128, 127).astype(np.int8)
        tensor.buffer = _append_buffer(schema, model, requantized)
    elif index not in producer or operator_name(schema, model, producer[index]) not in REQUANTIZING_OPS:
        return False
    tensor.quantization.scale = np.asarray([new], "float32")
    return True


def _append_buffer(schema, model, values: np.ndarray) -> int:
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(values.tobytes(), np.uint8)
    model.buffers.append(buffer)
    return len(model.buffers) - 1
