"""Batch-1 latency of a CDB-ResNet against its execution rate: every group on vs half of them forced off,
side by side in one run, in Keras and in float32 TFLite.

The gates are forced with :func:`dynzoo.models.cdb.force_gates` (pattern ``[1, 0]``: the first group of
every block on, the second off; for N = 2 exactly half the groups). Two builds share the weights:
``conditional`` (the default: a group whose gate is off is not computed, a ``cond`` per group, TFLite
``IF``) and ``masked`` (every group computed and multiplied by its 0/1 gate) — the masked build shows what
the skipping saves. Keras: a traced inference function per variant at batch 1. TFLite: each build × pattern
converted (builtin ops only) and run by the LiteRT interpreter (1 thread) with XNNPACK and with the builtin
kernels only. The variants are called round-robin, one call each per cycle, so that the load of a shared
machine hits them alike; each variant's latency is its median.

    python benchmarks/cdb_latency.py            # writes benchmarks/results/cdb_latency.{md,json}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from dynzoo.cli import hyphenate_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

PATTERNS = {"all on": [1, 1], "half off": [1, 0]}


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cdb_resnet50", help="a registered CDB model with N = 2")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--cycles", type=int, default=30, help="timed Keras calls per variant")
    p.add_argument("--tflite-cycles", type=int, default=15, help="timed TFLite invocations per variant")
    p.add_argument("--skip-tflite", action="store_true")
    p.add_argument("--output", default=str(Path(__file__).parent / "results" / "cdb_latency"))
    return p.parse_args(hyphenate_flags(sys.argv[1:]))


def interleaved_median(runners: dict, cycles: int) -> dict:
    """Median seconds of each runner, calling them round-robin ``cycles`` times after one warm-up call each,
    so that a change of the machine's load hits every runner alike."""
    times = {key: [] for key in runners}
    for run in runners.values():
        run()
    for _cycle in range(cycles):
        for key, run in runners.items():
            start = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def main():
    args = parse_args()
    import tensorflow as tf

    import dynzoo
    from dynzoo.models.cdb import analyze_gates, cdb_blocks, force_gates, gate_costs

    size = (args.input_size, args.input_size, 3)
    reference = dynzoo.create_model(args.model, input_shape=size, classifier_activation=None)
    if cdb_blocks(reference)[0].groups != 2:
        raise ValueError(
            f"`--model` must have N = 2 groups per block, {args.model} has {cdb_blocks(reference)[0].groups}."
        )
    networks = {}
    for build in ("conditional", "masked"):
        for pattern, on in PATTERNS.items():
            net = dynzoo.create_model(
                args.model, input_shape=size, classifier_activation=None, conditional=build == "conditional"
            )
            net.set_weights(reference.get_weights())
            force_gates(net, on)
            networks[(build, pattern)] = net
    images = np.random.default_rng(0).uniform(0, 255, (8, *size)).astype("float32")

    costs = gate_costs(reference)
    ratios, max_diff = {}, {}
    for pattern in PATTERNS:
        report = analyze_gates(networks[("conditional", pattern)], images)
        ratios[pattern] = {"flops_ratio": report.flops_ratio, "execution_rate": report.execution_rate}
        max_diff[pattern] = float(
            np.abs(report.outputs - networks[("masked", pattern)].predict(images, verbose=0)).max()
        )
    progress(f"built {args.model}; FLOPs ratio with half the groups off {ratios['half off']['flops_ratio']:.3f}")

    x = tf.constant(images[:1])
    fns = {key: tf.function(lambda v, n=net: n(v, training=False)) for key, net in networks.items()}
    keras_ms = {
        key: 1e3 * t
        for key, t in interleaved_median(
            {key: (lambda f=f: f(x).numpy()) for key, f in fns.items()}, args.cycles
        ).items()
    }
    progress("Keras timed")

    tflite = None
    if not args.skip_tflite:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        from dynzoo.export.tflite import op_counts, run_tflite, to_tflite

        flatbuffers, parity = {}, {}
        for (build, pattern), net in networks.items():
            progress(f"converting {build} / {pattern}")
            flatbuffers[(build, pattern)] = to_tflite(net)
            parity[f"{build} / {pattern}"] = float(
                np.abs(run_tflite(flatbuffers[(build, pattern)], images[:2]) - net.predict(images[:2], verbose=0)).max()
            )
        runners = {}
        for (build, pattern), fb in flatbuffers.items():
            for kernels in ("xnnpack", "builtin"):
                resolver = (
                    OpResolverType.AUTO if kernels == "xnnpack" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
                )
                interpreter = Interpreter(model_content=fb, num_threads=1, experimental_op_resolver_type=resolver)
                interpreter.allocate_tensors()
                interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images[:1])
                runners[(build, pattern, kernels)] = interpreter.invoke
        tflite_ms = {key: 1e3 * t for key, t in interleaved_median(runners, args.tflite_cycles).items()}
        progress("TFLite timed")
        tflite = {
            "ms": {" / ".join(k): v for k, v in tflite_ms.items()},
            "ops": {build: op_counts(flatbuffers[(build, "all on")]) for build in ("conditional", "masked")},
            "max_abs_logit_diff_vs_keras": parity,
        }

    result = {
        "model": args.model,
        "input": list(size),
        "keras_cycles": args.cycles,
        "tflite_cycles": args.tflite_cycles,
        "all_on_mmadds": costs.total / 1e6,
        "patterns": ratios,
        "masked_vs_conditional_max_logit_diff": max_diff,
        "keras_ms": {" / ".join(k): v for k, v in keras_ms.items()},
        "tflite": tflite,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))

    half = ratios["half off"]["flops_ratio"]
    k_ratio = keras_ms[("conditional", "half off")] / keras_ms[("conditional", "all on")]
    lines = [
        f"# {args.model} batch-1 latency vs execution rate — `python benchmarks/cdb_latency.py"
        + (f" --model {args.model} --input-size {args.input_size}" if args.model != "cdb_resnet50" else "")
        + "`",
        "",
        (
            f"Input {args.input_size}×{args.input_size}, random weights, gates forced; all-on MAdds "
            f"{costs.total / 1e6:.1f} M. Half the groups off (pattern [1, 0] in every block): execution rate "
            f"{ratios['half off']['execution_rate']:.2f}, FLOPs ratio {half:.3f}. Conditional and masked builds give "
            f"the same logits (max |Δ| {max(max_diff.values()):.1e}). Every variant is timed round-robin (one call "
            f"each per cycle), the median per variant; one run."
        ),
        "",
        f"Keras (traced inference function, batch 1, {args.cycles} cycles):",
        "",
        "| build | all on (ms) | half off (ms) | half off / all on |",
        "|---|---|---|---|",
    ]
    for build in ("conditional", "masked"):
        a, h = keras_ms[(build, "all on")], keras_ms[(build, "half off")]
        lines.append(f"| {build} | {a:.1f} | {h:.1f} | {h / a:.2f} |")
    lines += [
        "",
        (
            f"**Keras, conditional: half the groups off takes {k_ratio:.2f}× the all-on latency "
            f"(FLOPs ratio {half:.3f}).**"
        ),
    ]
    if tflite:
        lines += [
            "",
            (f"Float32 TFLite (builtin ops only, LiteRT interpreter, 1 thread, batch 1, {args.tflite_cycles} cycles):"),
            "",
            "| build | kernels | all on (ms) | half off (ms) | half off / all on |",
            "|---|---|---|---|---|",
        ]
        for build in ("conditional", "masked"):
            for kernels in ("xnnpack", "builtin"):
                a, h = (tflite_ms[(build, p, kernels)] for p in PATTERNS)
                lines.append(f"| {build} | {kernels} | {a:.1f} | {h:.1f} | {h / a:.2f} |")
        lines += [
            "",
            "TFLite ops, conditional build: "
            + ", ".join(f"{k} {v}" for k, v in sorted(tflite["ops"]["conditional"].items()))
            + "; masked build: "
            + ", ".join(f"{k} {v}" for k, v in sorted(tflite["ops"]["masked"].items()))
            + ".",
            "",
            "Max |TFLite − Keras| of the logits on 2 inputs: "
            + ", ".join(f"{k} {v:.1e}" for k, v in tflite["max_abs_logit_diff_vs_keras"].items())
            + ".",
        ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
