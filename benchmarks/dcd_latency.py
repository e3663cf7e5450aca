"""TFLite latency of DCD, DY-Conv and CondConv MobileNetV2s against the static MobileNetV2, side by side.

Every model is converted to float32 TFLite (builtin ops only, batch 1, 224×224) and timed with the LiteRT
interpreter (XNNPACK, 1 thread) in a fresh subprocess (``dynzoo.export.benchmark.measure_latency``).
To share the machine's noise fairly, the models are timed in interleaved rounds (every model once per
round) and each model's latency is the median of its per-round medians. Ratios are against the static
MobileNetV2 of the same width measured in the same run; MAdds ratios come from ``dynzoo.profile``.

    python benchmarks/dcd_latency.py                      # writes benchmarks/results/dcd_latency.md
    python benchmarks/dcd_latency.py --rounds 1 --runs 20 --models mobilenetv2_100 dcd_mobilenetv2_100
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from dynzoo.export.benchmark import measure_latency
from dynzoo.export.tflite import op_counts, run_tflite, to_tflite
from dynzoo.layers import DCDConv2D

import dynzoo
from dynzoo.profile import profile

# The "Λ only" rows are not a model of Table 3.4: every DCDConv2D keeps only its per-sample channel
# attention (the text's Λ-only variant). Any input-dependent 1×1 conv needs at least what it needs — a
# pooling pass over its input and a per-sample product over its output — so its latency bounds from
# below what a faster exact formulation of DCD could reach on this runtime.
LAMBDA_ONLY = "lambda_only"

# (label, registered model, builder options: DCDConv2D inference form / DynamicConv2D formulation)
VARIANTS = [
    ("MobileNetV2 ×1.0", "mobilenetv2_100", {}),
    ("DCD ×1.0, auto (default)", "dcd_mobilenetv2_100", {"inference_form": "auto"}),
    ("DCD ×1.0, parallel", "dcd_mobilenetv2_100", {"inference_form": "parallel"}),
    ("DCD ×1.0, kernel", "dcd_mobilenetv2_100", {"inference_form": "kernel"}),
    ("DCD ×1.0, Λ only (bound)", "dcd_mobilenetv2_100", {"inference_form": "auto", LAMBDA_ONLY: True}),
    ("DY-Conv ×1.0, branches", "dy_mobilenetv2_100", {"formulation": "branches"}),
    ("DY-Conv ×1.0, kernel", "dy_mobilenetv2_100", {"formulation": "kernel"}),
    ("CondConv ×1.0, branches", "condconv_mobilenetv2_100", {"formulation": "branches"}),
    ("CondConv ×1.0, kernel", "condconv_mobilenetv2_100", {"formulation": "kernel"}),
    ("MobileNetV2 ×0.5", "mobilenetv2_050", {}),
    ("DCD ×0.5, auto (default)", "dcd_mobilenetv2_050", {"inference_form": "auto"}),
    ("DCD ×0.5, parallel", "dcd_mobilenetv2_050", {"inference_form": "parallel"}),
    ("DCD ×0.5, kernel", "dcd_mobilenetv2_050", {"inference_form": "kernel"}),
    ("DCD ×0.5, Λ only (bound)", "dcd_mobilenetv2_050", {"inference_form": "auto", LAMBDA_ONLY: True}),
    ("DY-Conv ×0.5, branches", "dy_mobilenetv2_050", {"formulation": "branches"}),
    ("DY-Conv ×0.5, kernel", "dy_mobilenetv2_050", {"formulation": "kernel"}),
    ("CondConv ×0.5, branches", "condconv_mobilenetv2_050", {"formulation": "branches"}),
    ("CondConv ×0.5, kernel", "condconv_mobilenetv2_050", {"formulation": "kernel"}),
]
BASELINE = {"100": "mobilenetv2_100", "050": "mobilenetv2_050"}


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build(name: str, size: int, options: dict) -> keras.Model:
    options = dict(options)
    if not options.pop(LAMBDA_ONLY, False):
        return dynzoo.create_model(name, input_shape=(size, size, 3), **options)
    original = DCDConv2D.__init__
    DCDConv2D.__init__ = functools.partialmethod(original, channel_fusion=False)
    try:
        return dynzoo.create_model(name, input_shape=(size, size, 3), **options)
    finally:
        DCDConv2D.__init__ = original


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", help="registered names to keep (default: all variants)")
    parser.add_argument("--labels", nargs="*", help="variant labels to keep (default: all)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--runs", type=int, default=50, help="timed invocations per round (default 50)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dcd_latency.md"))
    args = parser.parse_args(argv)

    variants = [v for v in VARIANTS if (not args.models or v[1] in args.models)
                and (not args.labels or v[0] in args.labels)]
    rows = {}
    with tempfile.TemporaryDirectory(prefix="dcd_latency_") as tmp:
        for index, (label, name, kwargs) in enumerate(variants, 1):
            progress(f"converting {index}/{len(variants)}: {label}")
            model = build(name, args.size, kwargs)
            prof = profile(model)
            flatbuffer = to_tflite(model)
            path = Path(tmp) / f"{index}.tflite"
            path.write_bytes(flatbuffer)
            ops = op_counts(flatbuffer)
            # the converted model must compute what the Keras model computes (builtin ops only: to_tflite)
            x = np.random.default_rng(0).uniform(0, 255, size=(1, args.size, args.size, 3)).astype("float32")
            expected = model.predict(x, verbose=0)
            error = float(np.abs(run_tflite(flatbuffer, x) - expected).max() / np.abs(expected).max())
            rows[label] = {"name": name, "path": path, "params": prof.params, "madds": prof.madds, "error": error,
                           "ops": sum(ops.values()), "batch_matmul": ops.get("BATCH_MATMUL", 0), "medians": []}
            del model
        for round_index in range(args.rounds):
            for label, row in rows.items():
                progress(f"round {round_index + 1}/{args.rounds}: {label}")
                result = measure_latency(row["path"], num_threads=1, xnnpack=True, warmup=args.warmup,
                                         runs=args.runs, name=label)
                if not result.ok:
                    row["failure"] = result.error
                    continue
                row["medians"].append(result.median_ms)

    lines = [
        "# DCD / DY-Conv / CondConv MobileNetV2: TFLite latency vs static",
        "",
        (f"Command: `python benchmarks/dcd_latency.py {' '.join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))}` · "
        f"float32 TFLite, builtin ops, LiteRT interpreter, XNNPACK, 1 thread, batch 1, "
        f"{args.size}×{args.size} · {args.rounds} interleaved rounds × {args.runs} runs, latency = median "
        f"of the per-round medians · {platform.machine()}, {platform.processor() or platform.platform()}, "
        f"{os.cpu_count()} logical CPUs (shared machine) · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"),
        "",
        "| model | params | MAdds (M) | TFLite ops | BATCH_MATMUL | TFLite vs Keras (rel.) | latency (ms) | spread (ms) | latency ratio | MAdds ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, row in rows.items():
        base = rows.get(next((l for l, r in rows.items() if r["name"] == BASELINE[row["name"][-3:]]), ""), None)
        if not row["medians"]:
            lines.append(f"| {label} | {row['params']:,} | {row['madds'] / 1e6:.1f} | {row['ops']} | "
                         f"{row['batch_matmul']} | {row['error']:.1e} | failed: {row.get('failure')} | | | |")
            continue
        latency = statistics.median(row["medians"])
        spread = max(row["medians"]) - min(row["medians"])
        ratio = madds_ratio = ""
        if base and base["medians"]:
            ratio = f"{latency / statistics.median(base['medians']):.3f}"
            madds_ratio = f"{row['madds'] / base['madds']:.3f}"
        lines.append(f"| {label} | {row['params']:,} | {row['madds'] / 1e6:.1f} | {row['ops']} | "
                     f"{row['batch_matmul']} | {row['error']:.1e} | {latency:.2f} | {spread:.2f} | {ratio} | {madds_ratio} |")
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
