"""Which form of Dynamic Shift-Max runs faster in TFLite: element-wise or one per-sample matrix product?

Dynamic Shift-Max (``y = max_k (a_k ⊙ x + b_k ⊙ x̂)``, x̂ = x with its channels shifted to their partners)
exports as about a dozen element-wise passes: two channel shifts (``STRIDED_SLICE`` + ``CONCATENATION``),
four ``MUL``s, two ``ADD``s and a ``MAXIMUM``. The same output is one ``BATCH_MATMUL`` of the pixels with a
per-sample (C, K·C) matrix ``[M_1 | M_2]``, ``M_k = diag(a_k) + Π diag(b_k)`` (Π the partner
permutation), then the maximum of the two halves: fewer, larger ops, at C multiply-adds per output
instead of 2 — so it can only pay on narrow layers. The layer has both forms
(``dynzoo.layers.shift_max.shift_max_matrix_form``); its threshold ``MATRIX_FORM_MAX_WIDTH`` comes from
this probe.

For every Dynamic Shift-Max layer of a MicroNet at 224×224 (its own input shape, K, shift groups), both
forms are built as one-layer float32 TFLite models (the layer forced into each form), checked equal in
Keras, and timed side by side (``dynzoo.export.compare_latency``: XNNPACK, 1 thread, batch 1).

    python benchmarks/shift_max_probe.py [--model micronet_m0] [--cycles 100]

Writes benchmarks/results/shift_max_probe_MODEL.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import dynzoo
from dynzoo.export import compare_latency, convert, op_counts
from dynzoo.layers.shift_max import DynamicShiftMax, shift_max_form

RESULTS = Path(__file__).resolve().parent / "results"


def shift_max_layers(name: str) -> list[tuple[tuple, DynamicShiftMax]]:
    """(input shape, layer) of every Dynamic Shift-Max of ``name`` at 224×224, in network order."""
    shapes = []
    original = DynamicShiftMax.build

    def recording_build(self, input_shape):
        shapes.append((tuple(input_shape), self))
        return original(self, input_shape)

    DynamicShiftMax.build = recording_build
    try:
        keras.utils.set_random_seed(0)
        dynzoo.create_model(name, include_preprocessing=False)
    finally:
        DynamicShiftMax.build = original
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="micronet_m0")
    parser.add_argument("--cycles", type=int, default=100)
    args = parser.parse_args()
    rows = []
    for index, (shape, layer) in enumerate(shift_max_layers(args.model)):
        x = np.random.default_rng(index).uniform(0, 6, (1, *shape[1:])).astype("float32")
        outputs, flatbuffers = {}, {}
        for form in ("element-wise", "BATCH_MATMUL"):
            with shift_max_form(matrix=form == "BATCH_MATMUL"):
                inputs = keras.Input(shape[1:], batch_size=1)
                model = keras.Model(inputs, layer(inputs))
                outputs[form], flatbuffers[form] = model.predict(x, verbose=0), convert(model, "float32")
        error = float(np.abs(outputs["BATCH_MATMUL"] - outputs["element-wise"]).max())
        timing = compare_latency(flatbuffers, warmup=20, cycles=args.cycles, block=20)
        if not timing.ok:
            raise SystemExit(f"timing failed: {timing.error}")
        rows.append(
            (
                f"{index + 1}",
                "×".join(map(str, shape[1:])),
                layer.fusions,
                layer.shift_groups,
                error,
                *(sum(op_counts(flatbuffers[f]).values()) for f in flatbuffers),
                *(timing.median_ms[f] for f in flatbuffers),
                timing.ratio["BATCH_MATMUL"],
                timing.ratio_p10["BATCH_MATMUL"],
                timing.ratio_p90["BATCH_MATMUL"],
            )
        )
        print(f"[{time.strftime('%H:%M:%S')}] layer {index + 1}: {rows[-1]}", flush=True)
    total = [sum(r[7] for r in rows), sum(r[8] for r in rows)]
    lines = [
        f"# Dynamic Shift-Max of {args.model}: element-wise vs one per-sample BATCH_MATMUL",
        "",
        f"Command: `python benchmarks/shift_max_probe.py --model {args.model} --cycles {args.cycles}` · each "
        "layer alone at its input shape in the network at 224×224, float32 TFLite, XNNPACK, 1 thread, "
        f"batch 1, both forms timed side by side ({args.cycles} cycles × 20 runs) · {platform.machine()}, "
        f"{os.cpu_count()} logical CPUs (shared) · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| layer | input | K | G | max abs diff | ops, element-wise | ops, BATCH_MATMUL | element-wise (ms) "
        "| BATCH_MATMUL (ms) | ratio | p10–p90 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.1e} | {r[5]} | {r[6]} | {r[7]:.3f} | {r[8]:.3f} | "
        f"{r[9]:.2f} | {r[10]:.2f}–{r[11]:.2f} |"
        for r in rows
    ]
    lines += [
        "",
        f"Sum over the layers: element-wise {total[0]:.2f} ms, BATCH_MATMUL {total[1]:.2f} ms; per layer, "
        f"the faster form: {sum(min(r[7], r[8]) for r in rows):.2f} ms.",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"shift_max_probe_{args.model}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
