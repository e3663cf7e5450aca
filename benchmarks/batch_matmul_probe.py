"""Does XNNPACK run a 1×1 convolution whose weights are computed per sample (DCD's "kernel" form), and
what does the rest of such a layer cost?

Two pointwise layers of DCD-MobileNetV2 ×1.0 — a projection (56×56 pixels, 96 → 24 channels) and the
first expansion (112×112 pixels, 16 → 96 channels, the network's largest output) — each a float32
TFLite model timed at batch 1, 1 thread, with XNNPACK on and off, interleaved rounds:

* ``CONV_2D``, constant weights, bias and ReLU6 (the static network's layer: one op, bias and activation
  fused);
* ``BATCH_MATMUL`` of the pixels with a weight matrix computed from the input (a per-sample kernel);
* the same followed by a per-sample bias and ReLU6 (what a per-sample layer with a BatchNorm and an
  activation needs: ``BATCH_MATMUL`` has no fused bias or activation, so this is one more pass over
  the output);
* ``CONV_2D`` with the computed weights (a non-constant filter);
* ``FULLY_CONNECTED`` with the computed weights and a constant bias, both fused with the ReLU6 into
  the one op by the converter (its best case: DCD's bias depends on the sample, which the converter
  does not fuse) — the one builtin op that could do the whole layer in one pass;
* ``BATCH_MATMUL`` of the pixels with a constant-ones channel appended, the bias as the kernel's extra
  row, then ReLU6 (no ``ADD``: the bias rides in the matmul, only the clamp is left).

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

SHAPES = {"projection": (56, 96, 24), "expansion": (112, 16, 96)}  # (pixels per side, C_in, C_out)
FORMS = (
    "constant conv",
    "per-sample BATCH_MATMUL",
    "per-sample BATCH_MATMUL + bias + ReLU6",
    "per-sample conv",
    "per-sample FULLY_CONNECTED + bias + ReLU6",
    "per-sample BATCH_MATMUL, bias as a ones channel + ReLU6",
)
RESULTS = Path(__file__).resolve().parent / "results"


class PointwiseLayer(keras.layers.Layer):
    """x (1, S, S, C_in) → (1, S, S, C_out) with constant or per-sample weights."""

    def __init__(self, form: str, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.form, self.filters = form, filters

    def build(self, input_shape):
        cin = input_shape[-1]
        self.kernel = self.add_weight(shape=(cin, self.filters), initializer="glorot_uniform")
        self.mix = self.add_weight(shape=(cin, cin * self.filters), initializer="glorot_uniform")
        self.bias = self.add_weight(shape=(self.filters,), initializer="ones")

    def call(self, x):
        size, cin, cout = x.shape[1], x.shape[-1], self.filters
        if self.form == "constant conv":
            return ops.relu6(ops.conv(x, ops.reshape(self.kernel, (1, 1, cin, cout))) + self.bias)
        # a per-sample kernel: the constant one plus a term computed from the pooled input
        pooled = ops.mean(x, axis=(1, 2))
        weights = self.kernel + ops.reshape(ops.matmul(pooled, self.mix), (cin, cout))
        bias = self.bias * pooled[:, :1]  # a bias that depends on the sample, as DCD's does
        if self.form == "per-sample conv":
            return ops.conv(x, ops.reshape(weights, (1, 1, cin, cout)))
        if self.form.startswith("per-sample FULLY_CONNECTED"):  # 2-D matmul → FULLY_CONNECTED
            y = ops.relu6(ops.matmul(ops.reshape(x, (size * size, cin)), weights) + self.bias)
        elif self.form.endswith("ones channel + ReLU6"):
            x = ops.concatenate([x, ops.ones((1, size, size, 1))], axis=-1)
            weights = ops.concatenate([weights, bias], axis=0)
            y = ops.relu6(
                ops.matmul(ops.reshape(x, (1, size * size, cin + 1)), ops.reshape(weights, (1, cin + 1, cout)))
            )
        else:
            y = ops.matmul(ops.reshape(x, (1, size * size, cin)), ops.reshape(weights, (1, cin, cout)))
            if self.form == "per-sample BATCH_MATMUL + bias + ReLU6":
                y = ops.relu6(y + bias)
        return ops.reshape(y, (1, size, size, cout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    flatbuffers = {}
    for layer, (size, cin, cout) in SHAPES.items():
        for form in FORMS:
            inputs = keras.Input((size, size, cin), batch_size=1)
            flatbuffers[(layer, form)] = convert(keras.Model(inputs, PointwiseLayer(form, cout)(inputs)), "float32")
    settings = [(key, xnnpack) for key in flatbuffers for xnnpack in (True, False)]
    times: dict[tuple, list[float]] = {s: [] for s in settings}
    for r in range(args.rounds):
        for key, xnnpack in settings[r % len(settings) :] + settings[: r % len(settings)]:
            result = measure_latency(flatbuffers[key], num_threads=1, xnnpack=xnnpack, warmup=20, runs=200)
            times[(key, xnnpack)].append(result.median_ms if result.ok else float("nan"))
    lines = [
        "# A per-sample 1×1 kernel under XNNPACK",
        "",
        f"Command: `python benchmarks/batch_matmul_probe.py --rounds {args.rounds}` · one layer, float32, "
        "1 thread, batch 1, interleaved rounds, median of the per-round medians · "
        f"{platform.machine()}, {os.cpu_count()} logical CPUs (shared) · "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| layer | form | TFLite ops | XNNPACK (ms) | builtin kernels (ms) |",
        "|---|---|---|---:|---:|",
    ]
    for (layer, form), flatbuffer in flatbuffers.items():
        size, cin, cout = SHAPES[layer]
        ops_list = ", ".join(f"{k} {v}" for k, v in sorted(op_counts(flatbuffer).items()))
        lines.append(
            f"| {layer} {size}×{size}, {cin} → {cout} | {form} | {ops_list} | "
            f"{statistics.median(times[((layer, form), True)]):.3f} | "
            f"{statistics.median(times[((layer, form), False)]):.3f} |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batch_matmul_probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
