"""A DDN baked for one domain is the plain backbone: parameters, TFLite op list, latency, outputs.

Builds ``ddn_mobilenetv2_100_2x`` and ``_4x`` (random weights, random BatchNorm scales and shifts,
statistics of random images, so every folded weight matters) and the static ``mobilenetv2_100`` at 224×224, bakes each DDN for a random domain
embedding, converts the baked and the static networks to float32 TFLite and compares: parameter
counts, op counts, the baked TFLite outputs against the dynamic Keras model (relative max error), and
latency (LiteRT, XNNPACK, 1 thread, fresh subprocess per measurement; interleaved rounds, latency =
median of the per-round medians, ratio baked / static from the same run).

    python benchmarks/ddn_bake.py [--rounds 5] [--runs 50] [--size 224]

Writes benchmarks/results/ddn_bake.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dynzoo._compat import all_layers

HERE = Path(__file__).resolve().parent


def randomise_batchnorm(model, rng, images, embedding) -> None:
    """Random BN scales and shifts, and the moving statistics of ``images`` (so the random network stays
    well conditioned: with arbitrary statistics activations grow block after block and float32 rounding
    differences between two correct computations get amplified)."""
    import keras

    from dynzoo.models.bake import reestimate_batchnorm

    for layer in all_layers(model, include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape), m, v])
    reestimate_batchnorm(model, images, batch_size=len(images), embedding=embedding)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--output", default=str(HERE / "results" / "ddn_bake"))
    args = parser.parse_args(argv)

    import keras

    from dynzoo.export.benchmark import measure_latency
    from dynzoo.export.tflite import op_counts, run_tflite, to_tflite
    from dynzoo.models.bake import bake_domain
    from dynzoo.registry import create_model

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    shape = (args.size, args.size, 3)
    static = create_model("mobilenetv2_100", input_shape=shape, classifier_activation=None)
    rows = {"mobilenetv2_100 (static)": {"params": static.count_params(), "flatbuffer": to_tflite(static)}}
    images = rng.uniform(0, 255, (4, *shape)).astype("float32")
    for name in ("ddn_mobilenetv2_100_2x", "ddn_mobilenetv2_100_4x"):
        ddn = create_model(name, input_shape=shape, classifier_activation=None)
        embedding = (rng.normal(size=ddn.inputs[1].shape[-1]) / np.sqrt(ddn.inputs[1].shape[-1])).astype("float32")
        randomise_batchnorm(ddn, rng, rng.uniform(0, 255, (8, *shape)).astype("float32"), embedding)
        baked = bake_domain(ddn, embedding)
        flatbuffer = to_tflite(baked)
        expected = ddn.predict([images, np.tile(embedding, (len(images), 1))], verbose=0)
        error = float(np.abs(run_tflite(flatbuffer, images) - expected).max() / np.abs(expected).max())
        rows[f"{name} baked"] = {
            "params": baked.count_params(),
            "dynamic_params": ddn.count_params(),
            "flatbuffer": flatbuffer,
            "relative_max_error_vs_dynamic": error,
        }
    static_ops = op_counts(rows["mobilenetv2_100 (static)"]["flatbuffer"])
    with tempfile.TemporaryDirectory() as tmp:
        for label, row in rows.items():
            row["path"] = Path(tmp) / (label.split()[0] + ("_baked" if "baked" in label else "") + ".tflite")
            row["path"].write_bytes(row["flatbuffer"])
            row["ops"] = op_counts(row["flatbuffer"])
            row["same_ops_as_static"] = row["ops"] == static_ops
            row["medians"] = []
        for r in range(args.rounds):
            for label, row in rows.items():
                print(f"round {r + 1}/{args.rounds}: {label}", flush=True)
                result = measure_latency(row["path"], num_threads=1, xnnpack=True, warmup=args.warmup, runs=args.runs)
                if result.ok:
                    row["medians"].append(result.median_ms)
    base = statistics.median(rows["mobilenetv2_100 (static)"]["medians"])
    report = {
        "command": "python benchmarks/ddn_bake.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "setting": f"{args.size}x{args.size}, float32, LiteRT XNNPACK 1 thread, {args.rounds} interleaved "
        f"rounds x {args.runs} runs; {platform.machine()} {platform.processor() or platform.platform()}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "models": {},
    }
    for label, row in rows.items():
        latency = statistics.median(row["medians"])
        report["models"][label] = {
            "params": row["params"],
            "dynamic_params": row.get("dynamic_params"),
            "ops_total": sum(row["ops"].values()),
            "same_ops_as_static": row["same_ops_as_static"],
            "relative_max_error_vs_dynamic": row.get("relative_max_error_vs_dynamic"),
            "latency_ms": round(latency, 3),
            "latency_ratio_vs_static": round(latency / base, 3),
            "round_medians_ms": [round(m, 3) for m in row["medians"]],
        }
    lines = [
        f"# DDN baked per domain vs the static MobileNetV2 ×1.0 ({report['setting']})",
        "",
        "| model | params (DDN before baking) | TFLite ops | same op list as static | rel. max error vs dynamic "
        "| latency (ms) | ratio vs static |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, m in report["models"].items():
        dyn = f" ({m['dynamic_params']:,})" if m["dynamic_params"] else ""
        err = f"{m['relative_max_error_vs_dynamic']:.2e}" if m["relative_max_error_vs_dynamic"] is not None else "—"
        lines.append(
            f"| {label} | {m['params']:,}{dyn} | {m['ops_total']} | {m['same_ops_as_static']} | {err} | "
            f"{m['latency_ms']:.2f} | {m['latency_ratio_vs_static']:.3f} |"
        )
    lines += [
        "",
        f"Command: `{report['command']}` ({report['date']}). Latency: median of the per-round medians; "
        "the machine was shared with other jobs, so absolute times are noisy; the ratio comes from the "
        "same interleaved rounds.",
        "",
    ]
    out = Path(args.output)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
