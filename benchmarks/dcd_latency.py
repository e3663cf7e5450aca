"""TFLite latency of DCD, DY-Conv and CondConv MobileNetV2s against the static MobileNetV2, side by side.

Every model is converted to float32 TFLite (builtin ops only, batch 1, 224×224) and timed with the LiteRT
interpreter (XNNPACK, 1 thread). The models of one width are timed side by side in one process
(``dynzoo.export.compare_latency``): in every cycle each model runs a short block of invocations, and a
model's ratio to the static MobileNetV2 of its width is the median over the cycles of the ratio of their
block medians, taken where both met the same machine state (its 10th–90th percentile range is reported
too). MAdds ratios come from ``dynzoo.profile``.

    python benchmarks/dcd_latency.py                      # writes benchmarks/results/dcd_latency.md
    python benchmarks/dcd_latency.py --cycles 20 --models mobilenetv2_100 dcd_mobilenetv2_100
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import dynzoo
from dynzoo.export.benchmark import compare_latency
from dynzoo.export.tflite import op_counts, run_tflite, to_tflite
from dynzoo.layers import DCDConv2D
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
    parser.add_argument("--cycles", type=int, default=200, help="alternation cycles (default 200)")
    parser.add_argument("--block", type=int, default=5, help="timed invocations per model and cycle (default 5)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dcd_latency.md"))
    args = parser.parse_args(argv)

    variants = [
        v for v in VARIANTS if (not args.models or v[1] in args.models) and (not args.labels or v[0] in args.labels)
    ]
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
            rows[label] = {
                "name": name,
                "path": path,
                "params": prof.params,
                "madds": prof.madds,
                "error": error,
                "ops": sum(ops.values()),
                "batch_matmul": ops.get("BATCH_MATMUL", 0),
            }
            del model
        for width, baseline in BASELINE.items():
            group = {label: row for label, row in rows.items() if row["name"].endswith(width)}
            reference = next((label for label, row in group.items() if row["name"] == baseline), None)
            if reference is None:
                continue
            progress(f"timing the ×{int(width) / 100:g} models side by side ({args.cycles} cycles)")
            result = compare_latency(
                {label: row["path"] for label, row in group.items()},
                reference=reference,
                warmup=args.warmup,
                cycles=args.cycles,
                block=args.block,
            )
            for row in group.values():
                row["timing"], row["base"] = result, rows[reference]

    lines = [
        "# DCD / DY-Conv / CondConv MobileNetV2: TFLite latency vs static",
        "",
        (
            f"Command: `python benchmarks/dcd_latency.py {' '.join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))}` · "
            f"float32 TFLite, builtin ops, LiteRT interpreter, XNNPACK, 1 thread, batch 1, "
            f"{args.size}×{args.size} · the models of one width timed side by side in one process, "
            f"{args.cycles} cycles × {args.block} runs each · latency = median of all runs, ratio = median over "
            f"the cycles of the per-cycle ratio to the static network (p10–p90: its 10th–90th percentiles) · "
            f"{platform.machine()}, {platform.processor() or platform.platform()}, "
            f"{os.cpu_count()} logical CPUs (shared machine) · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        ),
        "",
        "| model | params | MAdds (M) | TFLite ops | BATCH_MATMUL | TFLite vs Keras (rel.) | latency (ms) "
        "| latency ratio | ratio p10–p90 | MAdds ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, row in rows.items():
        head = (
            f"| {label} | {row['params']:,} | {row['madds'] / 1e6:.1f} | {row['ops']} | {row['batch_matmul']} | "
            f"{row['error']:.1e} |"
        )
        timing = row.get("timing")
        if timing is None:
            lines.append(f"{head} not timed (no static network of its width in this run) | | | |")
        elif not timing.ok:
            lines.append(f"{head} failed: {timing.error} | | | |")
        else:
            lines.append(
                f"{head} {timing.median_ms[label]:.2f} | {timing.ratio[label]:.3f} | "
                f"{timing.ratio_p10[label]:.3f}–{timing.ratio_p90[label]:.3f} | "
                f"{row['madds'] / row['base']['madds']:.3f} |"
            )
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
