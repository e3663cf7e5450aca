"""MicroNet-M0…M3 and MobileNetV3-Small 1.0 as float32 and int8 TFLite, side by side, and what each export
rewrite buys.

Exports: 224×224, no preprocessing in the model, int8 calibrated on 16 standard-normal images. Weights are
random but every BatchNorm's shift and statistics too (N(0, 0.1²) shifts and means, variances in
[0.75, 1.25]): with freshly initialised zero shifts the converter would fold away ops that a trained
network keeps (the per-column bias of a folded depthwise pair). Every MicroNet and keras.applications
MobileNetV3-Small are exported as shipped; MicroNet-M0 and M3 also with one rewrite undone at a time:

- the Micro-Factorized depthwise pair as two half-kernel convolutions (not folded into one k×k);
- int8 without the 1×1 permutation convolutions (channel shifts and shuffles as slices, concatenations,
  transposes), or with them up to another width than the shipped 128 channels;
- int8 with the folded depthwise convolution's channel multiplier kept (not the input's channels repeated
  by a 1×1 convolution first);
- int8 without the scales fitted to XNNPACK's ratio rule;
- as before these rewrites: all of them undone, int8 in the float export form (Dynamic Shift-Max as
  matrix products with MAXIMUM, HARD_SWISH).

All are timed side by side in one process (``dynzoo.export.compare_latency``: LiteRT interpreter,
XNNPACK, 1 thread, batch 1); every ratio is the median over the cycles of the two models' per-cycle
ratio.

    python benchmarks/deploy_latency.py [--cycles 60] [--block 5]  # writes results/deploy_latency.{md,json}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from pathlib import Path
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import dynzoo
from dynzoo._compat import all_layers
from dynzoo.export import compare_latency, convert, op_names, tflite
from dynzoo.export.op_profile import xnnpack_delegation
from dynzoo.layers import micronet, shift_max, shuffle
from dynzoo.layers.base import SequenceBlock
from dynzoo.layers.micronet import MicroFactorizedDepthwise

MICRONETS = ("micronet_m0", "micronet_m1", "micronet_m2", "micronet_m3")
ABLATED = ("micronet_m0", "micronet_m3")
REFERENCE = "mobilenetv3_small_100"
RESULTS = Path(__file__).resolve().parent / "results"


def no_fold():
    return mock.patch.object(MicroFactorizedDepthwise, "call", SequenceBlock.call)


def permutation_width(channels: int):
    return mock.patch.multiple(shift_max, PERMUTATION_MAX_CHANNELS=channels), mock.patch.multiple(
        shuffle, PERMUTATION_MAX_CHANNELS=channels
    )


def no_scale_fit():
    return mock.patch.object(tflite, "fit_xnnpack_scales", lambda flatbuffer: flatbuffer)


def float_form_int8():
    """int8 traced in the float export form, hard-swish as HARD_SWISH."""
    never = lambda: False  # noqa: E731
    return (
        mock.patch.object(shift_max, "in_integer_export_form", never),
        mock.patch.object(shuffle, "in_integer_export_form", never),
        mock.patch.dict(tflite.HARD_SWISH_FORMS, clear=True, int16x8=tflite.HARD_SWISH_FORMS["int16x8"]),
    )


# label → (modes, the patches that undo the rewrite)
ABLATIONS = {
    "depthwise pair not folded": (("float32", "int8"), lambda: (no_fold(),)),
    "no permutation convolutions": (("int8",), lambda: permutation_width(0)),
    "permutations up to 32 channels": (("int8",), lambda: permutation_width(32)),
    "permutations up to 64 channels": (("int8",), lambda: permutation_width(64)),
    "permutations at every width": (("int8",), lambda: permutation_width(1 << 30)),
    "depthwise multiplier kept": (("int8",), lambda: (mock.patch.multiple(micronet, PERMUTATION_MAX_CHANNELS=0),)),
    "scales not fitted": (("int8",), lambda: (no_scale_fit(),)),
    "before (all undone)": (("float32", "int8"), lambda: (no_fold(), no_scale_fit(), *float_form_int8())),
}


def build(name: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    if name == REFERENCE:
        model = keras.applications.MobileNetV3Small(
            input_shape=(224, 224, 3), weights=None, include_preprocessing=False
        )
    else:
        model = dynzoo.create_model(name, weights=None, include_preprocessing=False)
    rng = np.random.default_rng(0)
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            for variable, draw in (
                (layer.gamma, lambda n: rng.uniform(0.75, 1.25, n)),
                (layer.beta, lambda n: rng.normal(0, 0.1, n)),
                (layer.moving_mean, lambda n: rng.normal(0, 0.1, n)),
                (layer.moving_variance, lambda n: rng.uniform(0.75, 1.25, n)),
            ):
                if variable is not None:
                    variable.assign(draw(variable.shape).astype("float32"))
    return model


def export(name: str, mode: str, data: np.ndarray, patches=()) -> bytes:
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        return convert(build(name), mode, data if mode == "int8" else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=60, help="alternation cycles (default 60)")
    parser.add_argument("--block", type=int, default=5, help="timed invocations per model and cycle (default 5)")
    args = parser.parse_args()

    data = np.random.default_rng(0).standard_normal((16, 224, 224, 3)).astype("float32")
    models: dict[str, bytes] = {}
    for name in (REFERENCE, *MICRONETS):
        for mode in ("float32", "int8"):
            started = time.time()
            models[f"{name} {mode}"] = export(name, mode, data)
            print(f"{name} {mode}: exported in {time.time() - started:.0f} s", flush=True)
    for name in ABLATED:
        for label, (modes, patches) in ABLATIONS.items():
            for mode in modes:
                models[f"{name} {mode}, {label}"] = export(name, mode, data, patches())
                print(f"{name} {mode}, {label}: exported", flush=True)
    timed = compare_latency(models, reference=f"{REFERENCE} float32", cycles=args.cycles, block=args.block)
    if not timed.ok:
        raise SystemExit(timed.error)

    def partitions(label: str) -> int:
        return xnnpack_delegation(models[label])[1]

    lines = [
        "# MicroNet vs MobileNetV3-Small 1.0, float32 and int8, and what each export rewrite buys",
        "",
        f"Command: `python benchmarks/deploy_latency.py --cycles {args.cycles} --block {args.block}` · LiteRT "
        "interpreter, XNNPACK, 1 thread, batch 1, 224×224, no preprocessing in the model, random weights and "
        "BatchNorm statistics, int8 calibrated on 16 standard-normal images · all models timed side by side in one "
        f"process; a ratio is the median of the per-cycle ratios · {platform.machine()}, {os.cpu_count()} "
        "logical CPUs (shared) · "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| model | float32 ms | int8 ms | int8 / float32 (p10–p90 of the cycles) | float32 / MNV3-S float32 | "
        "int8 / MNV3-S int8 | "
        "TFLite ops (float32, int8) | XNNPACK partitions (float32, int8) |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    summary = {}
    for name in (REFERENCE, *MICRONETS):
        f32, i8 = f"{name} float32", f"{name} int8"
        per_cycle = np.divide(timed.cycle_ms[i8], timed.cycle_ms[f32])
        row = {
            "float32_ms": timed.median_ms[f32],
            "int8_ms": timed.median_ms[i8],
            "int8_over_float32": timed.ratio_between(i8, f32),
            "int8_over_float32_p10_p90": np.percentile(per_cycle, [10, 90]).tolist(),
            "float32_over_reference": timed.ratio_between(f32, f"{REFERENCE} float32"),
            "int8_over_reference_int8": timed.ratio_between(i8, f"{REFERENCE} int8"),
            "ops": [len(op_names(models[f32])), len(op_names(models[i8]))],
            "partitions": [partitions(f32), partitions(i8)],
        }
        summary[name] = row
        low, high = row["int8_over_float32_p10_p90"]
        lines.append(
            f"| {name} | {row['float32_ms']:.2f} | {row['int8_ms']:.2f} | {row['int8_over_float32']:.2f}× "
            f"({low:.2f}–{high:.2f}) | "
            f"{row['float32_over_reference']:.2f}× | {row['int8_over_reference_int8']:.2f}× | "
            f"{row['ops'][0]}, {row['ops'][1]} | {row['partitions'][0]}, {row['partitions'][1]} |"
        )
    lines += [
        "",
        "Each rewrite undone on its own (ratio: to the shipped export of the same model and mode; "
        "above 1 means the rewrite helps):",
        "",
        "| model | mode | export | ms | ratio to shipped | TFLite ops | XNNPACK partitions |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    ablations = {}
    for name in ABLATED:
        for label, (modes, _) in ABLATIONS.items():
            for mode in modes:
                key = f"{name} {mode}, {label}"
                ablations[key] = {
                    "ms": timed.median_ms[key],
                    "ratio": timed.ratio_between(key, f"{name} {mode}"),
                    "ops": len(op_names(models[key])),
                    "partitions": partitions(key),
                }
                a = ablations[key]
                lines.append(
                    f"| {name} | {mode} | {label} | {a['ms']:.2f} | {a['ratio']:.2f}× | {a['ops']} | "
                    f"{a['partitions']} |"
                )
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "deploy_latency.md").write_text(text)
    (RESULTS / "deploy_latency.json").write_text(
        json.dumps({"cycles": args.cycles, "block": args.block, "models": summary, "ablations": ablations}, indent=2)
        + "\n"
    )


if __name__ == "__main__":
    main()
