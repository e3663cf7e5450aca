"""Whether the input pipeline stalls a training step: MicroNet-M0 and a static MobileNetV2 ×0.35 (224×224,
batch 64, this CPU) fed from memory, from dynzoo's pipeline and from a naive one. (The models' compute
throughput against the authors' code is ``benchmarks/train_throughput.py``.)

Each model is compiled as ``dynzoo train`` compiles it (SGD momentum, the MicroNet-M0 recipe's schedule,
label-smoothed CE + coupled L2) and fed three ways, side by side in one run:

* ``cached``: one batch repeated from memory — the compute ceiling, no input work at all;
* ``dynzoo``: :func:`dynzoo.data.train_dataset` on a folder of JPEGs (ImageNet-like, 500×375): random
  resized crop decoded with ``decode_and_crop_jpeg``, parallel map, prefetch;
* ``naive``: the same folder read the obvious way — decode the whole image, crop, resize, sequential
  map, no prefetch (what the pipeline would cost without the fixes).

Profile: every step is split into the wait for the next batch (``next(iterator)``) and the training
step itself (``train_on_batch``); the wait's share of the wall time is the input stall. A step is
compute-bound when its throughput matches ``cached`` and the wait share is near zero. The pipelines
alone (no training) are timed too.

    python benchmarks/input_pipeline.py            # writes benchmarks/results/input_pipeline.md
    python benchmarks/input_pipeline.py --steps 4 --warmup 1 --images 128
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from dynzoo.cli import hyphenate_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

import dynzoo
from dynzoo.data import Augmentation, open_source, train_dataset
from dynzoo.profile import profile
from dynzoo.train.recipes import get_recipe
from dynzoo.train.trainer import compile_for_recipe

MODELS = [("MicroNet-M0", "micronet_m0"), ("MobileNetV2 ×0.35 (static)", "mobilenetv2_035")]
SIZE, BATCH, CLASSES = 224, 64, 10
RESULTS = Path(__file__).parent / "results" / "input_pipeline.md"


def write_jpegs(root: Path, count: int) -> None:
    """``count`` smooth random 500×375 JPEGs (quality 90) in 10 class folders: ImageNet-like decode cost."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / "train" / f"class{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.uniform(0, 255, (12, 16, 3)).astype("float32")
        image = tf.image.resize(coarse, (375, 500), method="bicubic") + rng.normal(0, 12, (375, 500, 3))
        jpeg = tf.io.encode_jpeg(tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8), quality=90)
        (folder / f"{i:05d}.jpg").write_bytes(jpeg.numpy())


def naive_dataset(source, seed: int = 0) -> tf.data.Dataset:
    """The same augmentation without the fixes: full decode, sequential map, no prefetch."""
    aug = Augmentation()

    def prepare(index, example):
        data, label = example
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image),
            tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
            seed=[seed, index],
            min_object_covered=0.0,
            aspect_ratio_range=aug.crop_ratio,
            area_range=aug.crop_scale,
            use_image_if_no_bounding_boxes=True,
        )
        image = tf.image.resize(tf.slice(image, begin, size), (SIZE, SIZE))
        image = tf.image.stateless_random_flip_left_right(image, seed=[seed, index + 1])
        return image, tf.one_hot(label, source.num_classes)

    order = tf.range(source.num_examples, dtype=tf.int64)
    return source.examples(order).enumerate().map(prepare).batch(BATCH, drop_remainder=True).repeat()


def pipelines(source, steps_per_epoch: int) -> dict[str, tf.data.Dataset]:
    ours = train_dataset(source, SIZE, BATCH, steps_per_epoch=steps_per_epoch, seed=0)
    x, y = next(iter(ours))
    return {"cached": tf.data.Dataset.from_tensors((x, y)).repeat(), "dynzoo": ours, "naive": naive_dataset(source)}


def pipeline_alone(dataset: tf.data.Dataset, batches: int) -> float:
    iterator = iter(dataset)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * BATCH / (time.perf_counter() - start)


def timed_steps(model, dataset: tf.data.Dataset, steps: int, warmup: int) -> tuple[float, float]:
    """(images/s, share of wall time waiting for input) over ``steps`` training steps."""
    iterator = iter(dataset)
    for _ in range(warmup):
        model.train_on_batch(*next(iterator))
    wait = compute = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        x, y = next(iterator)
        t1 = time.perf_counter()
        model.train_on_batch(x, y)
        t2 = time.perf_counter()
        wait, compute = wait + t1 - t0, compute + t2 - t1
    return steps * BATCH / (wait + compute), wait / (wait + compute)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (tracing)")
    parser.add_argument("--images", type=int, default=384, help="JPEGs in the generated folder")
    parser.add_argument("--pipeline-batches", type=int, default=24, help="batches timed for the pipelines alone")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(hyphenate_flags(sys.argv[1:]))

    load_before = os.getloadavg()
    recipe = get_recipe("micronet_m0")
    rows, pipeline_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(Path(tmp), args.images)
        source = open_source("folder", "train", tmp)
        steps_per_epoch = source.num_examples // BATCH
        feeds = pipelines(source, steps_per_epoch)
        for name in ("dynzoo", "naive"):
            pipeline_rows.append((name, pipeline_alone(feeds[name], args.pipeline_batches)))
        for label, model_name in MODELS:
            model = dynzoo.create_model(
                model_name, input_shape=(SIZE, SIZE, 3), classes=CLASSES, classifier_activation=None
            )
            compile_for_recipe(model, recipe, recipe.lr * BATCH / recipe.batch_size, steps_per_epoch)
            madds = profile(dynzoo.create_model(model_name, input_shape=(SIZE, SIZE, 3))).madds / 1e6
            for feed in ("cached", "dynzoo", "naive"):
                images_per_second, wait_share = timed_steps(model, feeds[feed], args.steps, args.warmup)
                rows.append((label, madds, feed, images_per_second, wait_share))
                print(
                    f"{label:28s} {feed:7s} {images_per_second:7.1f} images/s, input wait {100 * wait_share:4.1f}%",
                    flush=True,
                )
    load_after = os.getloadavg()

    lines = [
        "# Input pipeline against the training step (224×224, batch 64, CPU)",
        "",
        (
            f"Command: `python benchmarks/input_pipeline.py --steps {args.steps} --warmup {args.warmup} "
            f"--images {args.images} --pipeline-batches {args.pipeline_batches}`. Machine: {os.cpu_count()} CPU "
            f"cores ({platform.processor() or platform.machine()}), TensorFlow {tf.__version__}; load average "
            f"{load_before[0]:.1f} before and {load_after[0]:.1f} after (the cores are shared, so absolute figures "
            "are noisy; the rows of one run are comparable)."
        ),
        "",
        "| model | MAdds (M, ImageNet head) | input | images/s | input wait (share of step time) |",
        "|---|---|---|---|---|",
        *(
            f"| {label} | {madds:.1f} | {feed} | {ips:.1f} | {100 * wait:.1f}% |"
            for label, madds, feed, ips, wait in rows
        ),
        "",
        "Input pipelines alone (no training), images/s:",
        "",
        "| pipeline | images/s |",
        "|---|---|",
        *(f"| {name} | {ips:.1f} |" for name, ips in pipeline_rows),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
