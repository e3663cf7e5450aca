"""Per-op profile of one model's training step (TensorFlow's profiler): where the time goes, by op type and
by the kind of Keras layer that made the op. The compute path of ``dynzoo.layers.conv``,
``dynzoo.layers.shift_max`` and ``dynzoo.layers.base.BatchNormalization`` was chosen from this profile.

Op times are summed over the step's threads (2 cores run ops side by side), so they add up to more than
the wall time; compare their shares.

    python benchmarks/train_profile.py micronet_m0      # writes benchmarks/results/train_profile_micronet_m0.md
    python benchmarks/train_profile.py micronet_m3 --batch 32
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

import dynzoo

RESULTS = Path(__file__).parent / "results"
# the layer kinds an op's name scope can show, most specific first
KINDS = (
    "batch_normalization",
    "symmetric_depthwise_conv2d",
    "symmetric_conv2d",
    "dynamic_shift_max",
    "channel_shuffle",
    "preprocessing",
    "dense",
    "dropout",
)


def op_times(logdir: str) -> dict[str, float]:
    """Milliseconds per TensorFlow op (``name:type``) in the trace under ``logdir``."""
    (path,) = Path(logdir).rglob("*.xplane.pb")
    space = xplane_pb2.XSpace()
    space.ParseFromString(path.read_bytes())
    times: dict[str, float] = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "/" in name:  # an op of the step's graph (not a runtime event)
                    times[name] += event.duration_ps / 1e9
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2, help="profiled steps (after 3 untimed ones)")
    parser.add_argument("--top", type=int, default=15, help="rows of each table")
    args = parser.parse_args()

    model = dynzoo.create_model(
        args.model, weights=None, input_shape=(args.size, args.size, 3), classifier_activation=None
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(args.batch, args.size, args.size, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, model.output_shape[-1], args.batch))
    for _ in range(3):
        model.train_on_batch(x, y)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        started = time.perf_counter()
        for _ in range(args.steps):
            model.train_on_batch(x, y)
        seconds = (time.perf_counter() - started) / args.steps
        tf.profiler.experimental.stop()
        times = op_times(logdir)

    by_type, by_kind = collections.Counter(), collections.Counter()
    for name, ms in times.items():
        scope, op_type = name.rsplit(":", 1)
        kind = next((k for k in KINDS if re.search(rf"\b{k}(_\d+)*\b", scope)), "other")
        by_type[op_type] += ms / args.steps
        by_kind[f"{kind} · {op_type}"] += ms / args.steps
    total = sum(by_type.values())

    def table(title: str, counter) -> list[str]:
        return [
            f"| {title} | ms per step | share |",
            "|---|---:|---:|",
            *(f"| {key} | {ms:.1f} | {100 * ms / total:.1f} % |" for key, ms in counter.most_common(args.top)),
            "",
        ]

    lines = [
        f"# Training-step profile: {args.model} ({args.size}×{args.size}, batch {args.batch})",
        "",
        f"Command: `python benchmarks/train_profile.py {args.model} --size {args.size} --batch {args.batch}`. "
        f"{os.cpu_count()} CPU cores, TensorFlow {tf.__version__}; {args.batch / seconds:.1f} images/s while "
        f"profiled; op time {total:.0f} ms per step, summed over threads.",
        "",
        *table("op type", by_type),
        *table("layer kind · op type", by_kind),
    ]
    out = RESULTS / f"train_profile_{args.model}.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
