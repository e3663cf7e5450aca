"""Batch-1 Keras latency of DRNets against their measured MAdds as the routing threshold T changes.

For each model, every threshold routes the same images (``analyze_routing``: the per-sample MAdds that are
really computed) and is timed at batch 1 with unselected branches skipped (``tf.cond`` per branch). The
routers are untrained (their softmax is nearly uniform), so T sweeps from every branch (T = 1) down to one
branch per connection: the point is the cost of what is computed, not accuracy (``drnet_digits.py`` has the
trained figures). Also timed: the same network built without conditionals (every branch computed, no
``tf.cond``), to show the price of skipping. To share the machine's noise fairly, the settings are timed in
interleaved rounds (each setting once per round, in a rotating order); a setting's latency is the median
of its per-round medians. Ratios are against the all-branch network without conditionals, same run. In
float32, T = 1 keeps the branches whose weights are not negligible (the cumulative weight reaches 1 before
branches of weight below float32's resolution), so it may compute less than every branch.

    python benchmarks/drnet_latency.py            # writes benchmarks/results/drnet_latency.md and .json
    python benchmarks/drnet_latency.py --models drnet_s --rounds 2 --images 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from dynzoo.data import digits_arrays
from dynzoo.layers.routing import set_routing
from dynzoo.models.drnet import DRNet, all_branch_madds, analyze_routing, routing_model

THRESHOLDS = (1.0, 0.8, 0.6, 0.4, 0.2, 0.05)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["drnet_s", "drnet_l"])
    p.add_argument("--thresholds", nargs="+", type=float, default=list(THRESHOLDS))
    p.add_argument("--images", type=int, default=30, help="test images timed per setting and round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--output", default=str(Path(__file__).parent / "results" / "drnet_latency"))
    return p.parse_args(argv)


def timed(fn, images: np.ndarray) -> float:
    """Median seconds of one call at batch 1."""
    times = []
    for x in images:
        start = time.perf_counter()
        fn(x[None]).numpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None) -> int:
    args = parse_args(argv)
    images = digits_arrays("test", 32)[0][: args.images].astype("float32")
    rows = []
    for name in args.models:
        keras.utils.set_random_seed(0)
        network = DRNet(name, input_shape=(32, 32, 3))
        plain = DRNet(name, input_shape=(32, 32, 3), conditional=False)
        plain.set_weights(network.get_weights())
        routed = routing_model(network)
        madds = {}
        for t in args.thresholds:
            set_routing(network, threshold=t)
            madds[t] = float(analyze_routing(network, images, routed=routed).madds.mean())
        skip = tf.function(lambda x, network=network: network(x, training=False))
        every = tf.function(lambda x, plain=plain: plain(x, training=False))
        settings = [(f"T = {t:g}", t, skip) for t in args.thresholds] + [("no conditionals", None, every)]
        for _, t, fn in settings:  # trace and warm up each
            if t is not None:
                set_routing(network, threshold=t)
            timed(fn, images[:3])
        per_round = {label: [] for label, _, _ in settings}
        for r in range(args.rounds):
            order = settings[r % len(settings) :] + settings[: r % len(settings)]
            for label, t, fn in order:
                if t is not None:
                    set_routing(network, threshold=t)
                per_round[label].append(timed(fn, images))
            progress(f"{name}: round {r + 1}/{args.rounds}")
        latency = {label: statistics.median(v) for label, v in per_round.items()}
        total = all_branch_madds(network)
        base_ms = latency["no conditionals"] * 1e3
        for label, t, _ in settings:
            m = madds[t] if t is not None else total
            rows.append(
                {
                    "model": name,
                    "setting": label,
                    "threshold": t,
                    "mean_madds_m": m / 1e6,
                    "madds_ratio": m / total,
                    "latency_ms": latency[label] * 1e3,
                    "latency_ratio": latency[label] * 1e3 / base_ms,
                }
            )
    write(args, rows)
    return 0


def write(args, rows) -> None:
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    lines = [
        "# DRNet batch-1 Keras latency against measured MAdds — `python benchmarks/drnet_latency.py`",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; TensorFlow {tf.__version__}; "
        f"32×32 digits test images, {args.images} per setting and round, {args.rounds} interleaved rounds "
        "(median of per-round medians). Untrained routers; ratios against the same model computing every "
        "branch without conditionals.",
        "",
        "| model | setting | mean MAdds (M) | MAdds ratio | latency (ms) | latency ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['setting']} | {r['mean_madds_m']:.2f} | {r['madds_ratio']:.2f} | "
            f"{r['latency_ms']:.2f} | {r['latency_ratio']:.2f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
