"""Why a full-integer MicroNet ran slower than its float32 twin on this machine: how much of each graph
XNNPACK takes, and which int8 ops it leaves to LiteRT's builtin kernels. The saved results were measured
before int8 exports got their own form, which these findings shaped (benchmarks/deploy_latency.py times
it); run now, part 1 measures that form.

1. MicroNet-M0 (224×224, untrained, calibrated on uniform noise with a full-range ramp) in float32 and int8,
   timed side by side (`dynzoo.export.compare_latency`, one thread) with XNNPACK (the default) and with
   the builtin kernels only, and the number of XNNPACK partitions (each boundary a hand-over between
   XNNPACK and a builtin op).
2. One op between two 1×1 convolutions, converted int8: how many XNNPACK partitions it leaves (1: XNNPACK
   takes the op; 2: the op runs outside, splitting the graph).

    python benchmarks/int8_delegation.py   # writes benchmarks/results/int8_delegation.md
"""

from __future__ import annotations

import collections
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

HERE = Path(__file__).resolve().parent

# (label, the op applied to a 8×8×16 map between two 1×1 convolutions)
SINGLE_OPS = [
    ("MAXIMUM of two activations (Dynamic Shift-Max's max)", lambda x: tf.maximum(x, x * 0.5)),
    (
        "BATCH_MATMUL of two activations (its matrix form)",
        lambda x: tf.reshape(
            tf.matmul(tf.reshape(x, (-1, 64, 16)), tf.reshape(x, (-1, 64, 16)), transpose_a=True), (-1, 16, 16, 1)
        ),
    ),
    (
        "BATCH_MATMUL by a constant (a grouped 1×1 convolution written so)",
        lambda x: tf.reshape(
            tf.matmul(
                tf.transpose(tf.reshape(x, (-1, 64, 4, 4)), (0, 2, 1, 3)),
                tf.reshape(tf.range(64.0) / 64.0, (1, 4, 4, 4)),
            ),
            (-1, 8, 8, 16),
        ),
    ),
    ("MEAN over H, W (global pooling)", lambda x: tf.reduce_mean(x, axis=[1, 2], keepdims=True) + x),
    ("STRIDED_SLICE + CONCATENATION (channel shift)", lambda x: tf.concat([x[..., 8:], x[..., :8]], -1)),
    (
        "TRANSPOSE (channel shuffle)",
        lambda x: tf.reshape(tf.transpose(tf.reshape(x, (-1, 8, 8, 4, 4)), (0, 1, 2, 4, 3)), (-1, 8, 8, 16)),
    ),
    ("LOGISTIC + MUL", lambda x: x * tf.sigmoid(x)),
    ("h-sigmoid as ADD, clamp, MUL", lambda x: tf.minimum(tf.maximum(x + 3.0, 0.0), 6.0) / 6.0),
    ("HARD_SWISH", lambda x: x * tf.nn.relu6(x + 3.0) / 6.0),
    ("PAD", lambda x: tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])),
    ("SPLIT + ADD", lambda x: tf.add(*tf.split(x, 2, axis=-1))),
    ("SOFTMAX", lambda x: tf.nn.softmax(x)),
    ("RELU on its own (not fused into the op before it)", lambda x: x - tf.nn.relu(x)),
    ("a + relu(b − a) (a max without MAXIMUM)", lambda x: x + tf.nn.relu(x * 0.5 - x)),
]


def ops_and_partitions(flatbuffer: bytes) -> tuple[collections.Counter, int]:
    """The op types of the graph, and how many XNNPACK partitions the default interpreter makes of it."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    ops = collections.Counter(op["op_name"] for op in interpreter._get_ops_details())
    return ops, ops.pop("DELEGATE", 0)


def single_op_model(op) -> keras.Model:
    inputs = keras.Input((8, 8, 16))
    x = keras.layers.Conv2D(16, 1)(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(16, 1)(keras.layers.Lambda(op)(x)))


def main() -> None:
    import dynzoo
    from dynzoo.export import compare_latency
    from dynzoo.export.tflite import convert, full_range_first

    keras.utils.set_random_seed(0)
    model = dynzoo.create_model("micronet_m0", weights=None)
    data = full_range_first(np.random.default_rng(0).uniform(0, 255, (16, 224, 224, 3)).astype("float32"))
    flatbuffers = {"float32": convert(model, "float32"), "int8": convert(model, "int8", data)}
    timed = {kernels: compare_latency(flatbuffers, xnnpack=kernels == "XNNPACK") for kernels in ("XNNPACK", "builtin")}
    lines = [
        "# int8 and XNNPACK",
        "",
        "`python benchmarks/int8_delegation.py`: LiteRT interpreter, one thread, "
        "float32 and int8 timed side by side (`compare_latency`: median ms, and the median of the per-cycle "
        "ratios to float32).",
        "",
        "| MicroNet-M0 224×224 | XNNPACK ms | ratio | builtin kernels ms | ratio | XNNPACK partitions | ops |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for mode, flatbuffer in flatbuffers.items():
        ops, parts = ops_and_partitions(flatbuffer)
        cells = " | ".join(f"{timed[k].median_ms[mode]:.2f} | {timed[k].ratio[mode]:.2f}×" for k in timed)
        lines.append(f"| {mode} | {cells} | {parts} | {', '.join(f'{k} {v}' for k, v in ops.most_common())} |")
    lines += ["", "| one int8 op between two 1×1 convolutions | XNNPACK partitions |", "|---|---:|"]
    calibration = np.random.default_rng(0).normal(size=(8, 8, 8, 16)).astype("float32")
    for label, op in SINGLE_OPS:
        lines.append(f"| {label} | {ops_and_partitions(convert(single_op_model(op), 'int8', calibration))[1]} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / "results" / "int8_delegation.md").write_text(text)


if __name__ == "__main__":
    main()
