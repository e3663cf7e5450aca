"""``dynzoo quickstart``: the whole path on a laptop, offline, in a few minutes — train MicroNet-M0 on
the handwritten digits, evaluate it, export float32 and int8 TFLite bundles, run them through LiteRT,
compare them with Keras, and put the bundles where the Android demo reads them."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL = "micronet_m0"
# Picked by measurement (README, "Quickstart"; benchmarks/quickstart_time.py): 32×32 digits reach ≥ 95 % top-1 well within the
# 5-minute budget on 2 cores; MicroNet's stride 32 leaves a 1×1 map, enough for 8×8 source images.
INPUT_SIZE = 32
EPOCHS = 15
CALIBRATION_IMAGES = 256
ANDROID_BUNDLES = Path("android_demo") / "app" / "src" / "main" / "assets" / "bundles"
MODES = ("float32", "int8")


@dataclass
class Row:
    name: str
    top1: float
    agreement: float | None = None  # share of test images with the Keras model's top-1 class
    max_abs_diff: float | None = None  # largest |logit − Keras logit| (float models)
    size_kb: float | None = None
    ms_per_image: float | None = None
    bundle: str | None = None


def write_quickstart_bundle(flatbuffer: bytes, mode: str, directory: Path, labels, input_size: int) -> None:
    """Write the bundle (``docs/bundle_format.md``) of the quickstart's network converted in ``mode``.

    With ``convert_modes`` (one SavedModel for every mode), the integration point with ``dynzoo.export``:
    ``write_bundle`` writes model.tflite + labels.txt + model_info.json + golden files.
    """
    from dynzoo.export.bundle import write_bundle
    from dynzoo.models.common import IMAGENET_MEAN, IMAGENET_STD

    write_bundle(
        directory,
        flatbuffer,
        labels=labels,
        source_model=MODEL,
        mode=mode,
        preprocessing_in_model=True,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        output_activation="none",
        name=directory.name,
        resize={"method": "bilinear", "resize_shorter": input_size, "crop": "center"},
        golden=True,
    )


def run_quickstart(
    out: Path | None = None,
    run_dir: Path = Path("runs") / "quickstart",
    epochs: int = EPOCHS,
    input_size: int = INPUT_SIZE,
    verbose: int = 1,
) -> list[Row]:
    """Train, evaluate, export, compare; return one :class:`Row` per model (Keras first)."""
    from dynzoo.data import DIGITS_LABELS, eval_dataset, open_source
    from dynzoo.export.tflite import convert_modes
    from dynzoo.export.verify import tflite_predictor
    from dynzoo.train import TrainConfig, train
    from dynzoo.train.evaluate import evaluate, keras_predictor

    out = Path(out) if out is not None else (ANDROID_BUNDLES if ANDROID_BUNDLES.parent.is_dir() else Path("bundles"))
    started = time.perf_counter()
    result = train(
        TrainConfig(
            model=MODEL,
            dataset="digits",
            recipe="digits",
            overrides={"epochs": epochs, "input_size": input_size},
            model_dir=os.fspath(run_dir),
            overwrite=True,
            validation_freq=0,
            verbose=verbose,
            deterministic=True,
        )
    )  # seeded and deterministic ops: the same figures on every run
    model = result.model
    test = eval_dataset(open_source("digits", "test", image_size=input_size), input_size, 128)
    images = np.concatenate([x.numpy() for x, _ in test])
    keras_logits = keras_predictor(model)(images)
    rows = [Row("Keras (float32)", result.summary["test_top1"])]

    calibration_source = open_source("digits", "train", image_size=input_size)
    calibration = np.concatenate([x.numpy() for x, _ in eval_dataset(calibration_source, input_size, 128)])
    calibration = calibration[np.random.default_rng(0).permutation(len(calibration))[:CALIBRATION_IMAGES]]
    for mode, flatbuffer in convert_modes(model, MODES, calibration).items():  # one trace for both modes
        directory = out / f"{MODEL}_digits_{mode}"
        write_quickstart_bundle(flatbuffer, mode, directory, DIGITS_LABELS, input_size)
        predict, _ = tflite_predictor(directory)
        scores = evaluate(predict, test, progress=False)
        logits = predict(images)
        rows.append(
            Row(
                f"TFLite {mode}",
                scores.top1,
                agreement=float(np.mean(logits.argmax(-1) == keras_logits.argmax(-1))),
                max_abs_diff=float(np.max(np.abs(logits - keras_logits))),
                size_kb=len(flatbuffer) / 1024,
                ms_per_image=1000 * scores.seconds / scores.examples,
                bundle=os.fspath(directory),
            )
        )
    if verbose:
        print(
            f"\n{table(rows)}\n\nquickstart finished in "
            f"{time.perf_counter() - started:.0f} s; bundles in {os.fspath(out)}"
        )
    return rows


def table(rows: list[Row]) -> str:
    """One Markdown table comparing the Keras model with its TFLite bundles on the digits test split."""

    def fmt(value, pattern):
        return "–" if value is None else pattern.format(value)

    lines = [
        "| model | top-1 | top-1 agreement with Keras | max abs logit diff | size (KB) | ms/image | bundle |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {100 * r.top1:.2f}% | {fmt(None if r.agreement is None else 100 * r.agreement, '{:.1f}%')} | "
            f"{fmt(r.max_abs_diff, '{:.2e}')} | {fmt(r.size_kb, '{:.0f}')} | "
            f"{fmt(r.ms_per_image, '{:.2f}')} | {r.bundle or '–'} |"
        )
    return "\n".join(lines)


def _quickstart(args: argparse.Namespace) -> int:
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}.")
    if args.input_size < 32:
        raise ValueError(f"--input-size must be at least 32, got {args.input_size}.")
    run_quickstart(args.out, Path(args.run_dir), args.epochs, args.input_size)
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "quickstart",
        description="Train MicroNet-M0 on scikit-learn's handwritten digits (offline), evaluate it, export "
        "float32 and int8 TFLite bundles, run them through LiteRT, compare them with Keras in one table and "
        "write the bundles where the Android demo reads them.",
    )
    p.add_argument(
        "--out", default=None, help=f"bundle folder (default {ANDROID_BUNDLES} when it exists, else ./bundles)"
    )
    p.add_argument(
        "--run-dir",
        default=os.fspath(Path("runs") / "quickstart"),
        help="training folder (checkpoint, logs, model.keras)",
    )
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--input-size", type=int, default=INPUT_SIZE)
    p.set_defaults(func=_quickstart)
