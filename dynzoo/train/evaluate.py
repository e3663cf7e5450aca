"""``dynzoo eval``: top-1/top-5 of a Keras model or a ``.tflite`` (or bundle) on a dataset, with the
papers' evaluation preprocessing (resize the shorter side to ``size/0.875``, centre crop)."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class EvalResult:
    top1: float
    top5: float
    examples: int
    seconds: float


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many rows of ``scores`` rank their label among the ``k`` highest."""
    k = min(k, scores.shape[-1])
    top = np.argpartition(-scores, k - 1, axis=-1)[:, :k]
    return int(np.sum(np.any(top == labels[:, None], axis=-1)))


def evaluate(
    predict: Callable[[np.ndarray], np.ndarray], dataset, limit: int | None = None, progress: bool = True
) -> EvalResult:
    """Top-1/top-5 of ``predict`` (float images [0, 255] (B, S, S, 3) → scores (B, N)) over ``dataset``
    (batches of images and int labels), stopping after ``limit`` examples."""
    from keras.utils import Progbar

    correct1 = correct5 = seen = 0
    bar = Progbar(limit, unit_name="image") if progress else None
    started = time.perf_counter()
    for images, labels in dataset:
        images, labels = images.numpy(), labels.numpy()
        if limit is not None:
            images, labels = images[: limit - seen], labels[: limit - seen]
        scores = predict(images)
        correct1 += topk_correct(scores, labels, 1)
        correct5 += topk_correct(scores, labels, 5)
        seen += len(labels)
        if bar:
            bar.update(seen, values=[("top1", correct1 / seen)], finalize=False)
        if limit is not None and seen >= limit:
            break
    if bar:
        bar.update(seen, finalize=True)
    if not seen:
        raise ValueError("the evaluation split is empty.")
    return EvalResult(correct1 / seen, correct5 / seen, seen, time.perf_counter() - started)


def keras_predictor(model) -> Callable[[np.ndarray], np.ndarray]:
    return lambda images: np.asarray(model.predict(images, batch_size=len(images), verbose=0))


def _eval(args: argparse.Namespace) -> int:
    from dynzoo.data import eval_dataset, open_source

    if (args.model is None) == (args.tflite is None):
        raise ValueError("pass exactly one of --model (a registered name or a .keras file) and --tflite.")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}.")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}.")
    if args.tflite:
        from dynzoo.export.verify import tflite_predictor

        predict, size = tflite_predictor(args.tflite, args.threads)
        if args.input_size and args.input_size != size:
            raise ValueError(f"--input-size {args.input_size} differs from the TFLite model's input {size}.")
        source = open_source(
            args.dataset,
            args.split,
            args.data_dir,
            image_size=size,
            manual_dir=args.manual_dir,
            check_images=args.check_images,
            skip_bad_images=args.skip_bad_images,
        )
        subject = os.fspath(args.tflite)
    else:
        from dynzoo.registry import create_model, load_model

        # A .keras file's input size is the data's size: a source that renders its images at a size
        # (the digits) must render them at that one, not resize them from another.
        model = load_model(args.model) if args.model.endswith(".keras") else None
        size = args.input_size or (model.inputs[0].shape[1] if model is not None else None) or 224
        source = open_source(
            args.dataset,
            args.split,
            args.data_dir,
            image_size=size,
            manual_dir=args.manual_dir,
            check_images=args.check_images,
            skip_bad_images=args.skip_bad_images,
        )
        if model is None:
            model = create_model(
                args.model, input_shape=(size, size, 3), classes=source.num_classes, weights=args.weights
            )
        predict, subject = keras_predictor(model), args.model
    classes = source.num_classes
    dataset = eval_dataset(source, size, args.batch_size, crop_fraction=args.crop_fraction)
    scores_shape = predict(next(iter(dataset))[0].numpy()[:1]).shape
    if scores_shape[-1] != classes:
        raise ValueError(f"the model has {scores_shape[-1]} outputs but {args.dataset!r} has {classes} classes.")
    result = evaluate(predict, dataset, args.limit)
    skipped = f", {len(source.skipped)} undecodable skipped" if source.skipped else ""
    rows = [
        ("model", subject),
        ("dataset", f"{args.dataset} ({args.split}, {result.examples} images{skipped}, input {size})"),
        ("top-1", f"{100 * result.top1:.2f}%"),
        ("top-5", f"{100 * result.top5:.2f}%"),
        ("images/s", f"{result.examples / result.seconds:.1f}"),
    ]
    paper = _paper_top1(args.model) if args.dataset.startswith("imagenet2012") else None
    if paper is not None:
        rows.append(("paper top-1", f"{paper}%"))
    width = max(len(k) for k, _ in rows)
    print(
        "\n".join(
            [
                f"| {'':{width}} | result |",
                f"|{'-' * (width + 2)}|--------|",
                *(f"| {k:{width}} | {v} |" for k, v in rows),
            ]
        )
    )
    return 0


def _paper_top1(model: str | None):
    from dynzoo.registry import get_entry, list_models

    if model is None or model not in list_models():
        return None
    return get_entry(model).reference.get("paper_top1")


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        description="Top-1/top-5 accuracy with the papers' evaluation preprocessing (resize the shorter side "
        "to size/crop_fraction, centre crop). Check converted ImageNet weights against the papers: "
        "dynzoo eval --model micronet_m0 --weights imagenet --dataset imagenet2012 --data-dir DIR",
    )
    p.add_argument("--model", help="registered model name or a .keras file")
    p.add_argument("--weights", default=None, help="'imagenet' or a weights file, for a registered --model")
    p.add_argument("--tflite", help="a .tflite file or a bundle folder (instead of --model)")
    p.add_argument("--dataset", default="digits", help="'digits', 'folder' or a TFDS name (default digits)")
    p.add_argument("--data-dir", default=None, help="dataset folder")
    p.add_argument("--manual-dir", default=None, help="TFDS manual download folder (imagenet2012)")
    p.add_argument(
        "--split",
        default="test",
        choices=("train", "test"),
        help="split (test = the validation split where there is no test split)",
    )
    p.add_argument("--input-size", type=int, default=None, help="input size (default: the model's, else 224)")
    p.add_argument(
        "--crop-fraction",
        type=float,
        default=None,
        help="centre-crop fraction (default 0.875 for photos, 1.0 for digits and CIFAR)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads")
    p.add_argument(
        "--check-images",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decode every image of a folder first and name the ones that fail (default: for "
        "folders of up to 20,000 images)",
    )
    p.add_argument("--skip-bad-images", action="store_true", help="evaluate without the images that fail to decode")
    p.set_defaults(func=_eval)
