"""Does XNNPACK run a 1×1 convolution whose weights are computed per sample (DCD's "kernel" form)?

One pointwise layer at a typical early DCD-MobileNetV2 ×1.0 shape (56×56 pixels, 96 → 24 channels), three
ways, each a float32 TFLite model timed at batch 1, 1 thread, with XNNPACK on and off, interleaved rounds:

* ``CONV_2D``, constant weights (the static network's layer);
* ``BATCH_MATMUL`` of the pixels with a weight matrix computed from the input (a per-sample kernel);
* ``CONV_2D`` with the same computed weights (a non-constant filter).

    python benchmarks/batch_matmul_probe.py [--rounds 5]

Writes benchmarks/results/batch_matmul_probe.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
from keras import ops

from dynzoo.export import convert, op_counts
from dynzoo.export.benchmark import measure_latency

SIZE, CIN, COUT = 56, 96, 24
RESULTS = Path(__file__).resolve().parent / "results"


class PointwiseLayer(keras.layers.Layer):
    """x (1, S, S, C_in) → (1, S, S, C_out) with constant or per-sample weights."""

    def __init__(self, form: str, **kwargs):
        super().__init__(**kwargs)
        self.form = form

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(CIN, COUT), initializer="glorot_uniform")
        self.mix = self.add_weight(shape=(CIN, CIN * COUT), initializer="glorot_uniform")

    def call(self, x):
        if self.form == "constant conv":
            return ops.conv(x, ops.reshape(self.kernel, (1, 1, CIN, COUT)))
        # a per-sample kernel: the constant one plus a term computed from the pooled input
        weights = self.kernel + ops.reshape(ops.matmul(ops.mean(x, axis=(1, 2)), self.mix), (CIN, COUT))
        if self.form == "per-sample BATCH_MATMUL":
            flat = ops.reshape(x, (1, SIZE * SIZE, CIN))
            return ops.reshape(ops.matmul(flat, ops.reshape(weights, (1, CIN, COUT))), (1, SIZE, SIZE, COUT))
        return ops.conv(x, ops.reshape(weights, (1, 1, CIN, COUT)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    flatbuffers = {}
    for form in ("constant conv", "per-sample BATCH_MATMUL", "per-sample conv"):
        inputs = keras.Input((SIZE, SIZE, CIN), batch_size=1)
        flatbuffers[form] = convert(keras.Model(inputs, PointwiseLayer(form)(inputs)), "float32")
    settings = [(form, xnnpack) for form in flatbuffers for xnnpack in (True, False)]
    times: dict[tuple[str, bool], list[float]] = {s: [] for s in settings}
    for r in range(args.rounds):
        for form, xnnpack in settings[r % len(settings):] + settings[:r % len(settings)]:
            result = measure_latency(flatbuffers[form], num_threads=1, xnnpack=xnnpack, warmup=20, runs=200)
            times[(form, xnnpack)].append(result.median_ms if result.ok else float("nan"))
    lines = ["# A per-sample 1×1 kernel under XNNPACK", "",
             f"Command: `python benchmarks/batch_matmul_probe.py --rounds {args.rounds}` · one layer, "
             f"{SIZE}×{SIZE} pixels, {CIN} → {COUT} channels, float32, 1 thread, batch 1, interleaved rounds, "
             f"median of the per-round medians · {platform.machine()}, {os.cpu_count()} logical CPUs (shared) · "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             "| form | TFLite ops | XNNPACK (ms) | builtin kernels (ms) |", "|---|---|---:|---:|"]
    for form, flatbuffer in flatbuffers.items():
        ops_list = ", ".join(f"{k} {v}" for k, v in sorted(op_counts(flatbuffer).items()))
        lines.append(f"| {form} | {ops_list} | {statistics.median(times[(form, True)]):.3f} | "
                     f"{statistics.median(times[(form, False)]):.3f} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batch_matmul_probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
