"""A probe for the export optimizer: MicroNet-M0 and M3 converted after three rewrites that keep int8 ops
inside XNNPACK (`benchmarks/int8_delegation.py` lists the ones it leaves out), against the shipped export.

- Dynamic Shift-Max element-wise (no activation-by-activation BATCH_MATMUL);
- its max of two fusions as ``a + relu(b − a)`` (no MAXIMUM);
- hard-swish as ``x · (relu(x + 3) − relu(x − 3)) / 6`` (no HARD_SWISH), the int16x8 export's form.

The max rewrite is patched into the layer module for this probe only: the export does not do it (yet).
LiteRT interpreter, XNNPACK, one thread; each model's four exports timed side by side
(`dynzoo.export.compare_latency`, ratios to its float32 export); untrained weights, calibrated on uniform
noise with a full-range ramp.

    python benchmarks/int8_rewrite_probe.py   # writes benchmarks/results/int8_rewrite_probe.md
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import keras
import numpy as np
from int8_delegation import ops_and_partitions

HERE = Path(__file__).resolve().parent


class _MaxAsRelu:
    """keras.ops, with ``maximum(a, b)`` computed as ``a + relu(b − a)``."""

    def __getattr__(self, name):
        return getattr(keras.ops, name)

    @staticmethod
    def maximum(a, b):
        return a + keras.ops.relu(b - a)


@contextlib.contextmanager
def max_as_relu():
    from dynzoo.layers import shift_max

    shift_max.ops = _MaxAsRelu()
    try:
        yield
    finally:
        shift_max.ops = keras.ops


def main() -> None:
    import dynzoo
    from dynzoo.export import compare_latency, tflite
    from dynzoo.export.cli import full_range_first
    from dynzoo.layers.shift_max import shift_max_form

    lines = ["# int8 rewrites that keep ops inside XNNPACK (probe)", "",
             "`python benchmarks/int8_rewrite_probe.py`; XNNPACK, one thread, side by side (`compare_latency`).",
             "", "| model | export | XNNPACK partitions | ms | ratio to float32 |", "|---|---|---:|---:|---:|"]
    for name in ("micronet_m0", "micronet_m3"):
        keras.utils.set_random_seed(0)
        model = dynzoo.create_model(name, weights=None)
        size = model.input_shape[1]
        data = full_range_first(np.random.default_rng(0).uniform(0, 255, (16, size, size, 3)).astype("float32"))
        rewritten = tflite.exportable(model, "int16x8")  # hard-swish in relu pieces
        with max_as_relu(), shift_max_form(matrix=False):
            saved = tflite.save_for_conversion(rewritten, Path(tempfile.mkdtemp()) / "saved_model")
        exports = {"float32": tflite.convert(model, "float32"), "int8": tflite.convert(model, "int8", data),
                   "float32, rewritten": tflite.convert(rewritten, "float32", saved_model=saved),
                   "int8, rewritten": tflite.convert(rewritten, "int8", data, saved_model=saved)}
        timed = compare_latency(exports)
        for label, flatbuffer in exports.items():
            lines.append(f"| {name} | {label} | {ops_and_partitions(flatbuffer)[1]} | {timed.median_ms[label]:.2f} | "
                         f"{timed.ratio[label]:.2f}× |")
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / "results" / "int8_rewrite_probe.md").write_text(text)


if __name__ == "__main__":
    main()
