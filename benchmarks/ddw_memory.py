"""Peak training memory of DDW's weighted sums: the adjacency-matrix form (custom gradient) vs the naive forms.

Every (model, form) pair trains in its own fresh subprocess, at the same batch and input size, with
TensorFlow's BFC allocator on the CPU (``TF_CPU_ALLOCATOR_USE_BFC=true``), whose statistics count every
tensor TensorFlow allocates. After one warm-up step (tracing, weights, optimizer slots), the statistics are
reset and ``--steps`` SGD steps run, one op at a time (inter-op parallelism 1, so the peak does not depend
on how concurrent ops happen to overlap); the figure is the allocator's peak during those steps minus what was in
use before them (the weights and optimizer state): the memory a training step needs. The process's peak
resident set (VmHWM) is reported too.

Forms (``aggregation`` of :class:`~dynzoo.layers.wiring.WiredStage`, same values and gradients):
``adjacency`` — custom gradient keeping only the adjacency rows and the node outputs; ``stacked`` — the
adjacency-row contraction of stacked predecessors, whose (B, j, H, W, C) stack autodiff keeps for every node
(the naive form); ``edges`` — a Python sum of per-edge products under autodiff.

    python benchmarks/ddw_memory.py     # writes benchmarks/results/ddw_memory.{md,json}
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from dynzoo.cli import hyphenate_flags

FORMS = ("adjacency", "stacked", "edges")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["ddw_resnet18", "ddw_resnet50", "ddw_resnet101"])
    p.add_argument("--size", type=int, default=64, help="input height and width")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=2, help="measured steps after the warm-up step")
    p.add_argument("--output", default=str(Path(__file__).parent / "results" / "ddw_memory"))
    p.add_argument("--worker", nargs=2, metavar=("MODEL", "FORM"), help=argparse.SUPPRESS)
    return p.parse_args(hyphenate_flags(sys.argv[1:]))


def vm_hwm_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def worker(model_name: str, form: str, size: int, batch_size: int, steps: int) -> dict:
    """Train ``model_name`` with ``form`` in this process; return the memory figures."""
    import keras
    import numpy as np
    import tensorflow as tf

    import dynzoo

    tf.config.threading.set_inter_op_parallelism_threads(1)  # one op at a time: a reproducible peak
    keras.utils.set_random_seed(0)
    model = dynzoo.create_model(
        model_name, input_shape=(size, size, 3), classes=10, aggregation=form, classifier_activation=None
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch_size, size, size, 3)).astype("float32")
    y = rng.integers(0, 10, batch_size)
    model.train_on_batch(x, y)  # traces; creates the optimizer slots
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    tf.config.experimental.reset_memory_stats("CPU:0")
    for _ in range(steps):
        loss = model.train_on_batch(x, y)
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    return {
        "model": model_name,
        "form": form,
        "step_peak_bytes": peak - before,
        "persistent_bytes": before,
        "peak_rss_bytes": vm_hwm_bytes(),
        "loss": float(np.asarray(loss).reshape(-1)[0]),
    }


def run_worker(model_name: str, form: str, args) -> dict:
    env = {**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [
        sys.executable,
        __file__,
        "--worker",
        model_name,
        form,
        "--size",
        str(args.size),
        "--batch-size",
        str(args.batch_size),
        "--steps",
        str(args.steps),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{model_name}/{form} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    args = parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.size, args.batch_size, args.steps)))
        return
    from tqdm import tqdm

    rows = []
    for model_name in tqdm(args.models, desc="models"):
        for form in FORMS:
            rows.append(run_worker(model_name, form, args))
    mb = 2**20
    lines = [
        f"# DDW peak training memory (batch {args.batch_size}, {args.size}×{args.size}, CPU BFC allocator)",
        "",
        "Produced by `python benchmarks/ddw_memory.py`. Step peak: allocator peak during a training step minus "
        "the memory held before it (weights, optimizer state). Ratio: adjacency form / naive (stacked) form.",
        "",
        "| model | form | step peak (MiB) | ratio to stacked | persistent (MiB) | peak RSS (MiB) | loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        naive = next(r for r in rows if r["model"] == row["model"] and r["form"] == "stacked")
        row["ratio_to_stacked"] = row["step_peak_bytes"] / naive["step_peak_bytes"]
        lines.append(
            f"| {row['model']} | {row['form']} | {row['step_peak_bytes'] / mb:.1f} | "
            f"{row['ratio_to_stacked']:.3f} | {row['persistent_bytes'] / mb:.1f} | "
            f"{row['peak_rss_bytes'] / mb:.0f} | {row['loss']:.4f} |"
        )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(
        json.dumps(
            {"settings": {"size": args.size, "batch_size": args.batch_size, "steps": args.steps}, "rows": rows},
            indent=1,
        )
    )
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
