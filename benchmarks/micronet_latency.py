"""MicroNet float32 TFLite latency against MobileNetV3-Small 1.0, and what the exported forms of its layers buy.

Every MicroNet is exported as shipped (each channel shuffle as RESHAPE → TRANSPOSE → RESHAPE, the stem
folded into one 3×3 convolution, narrow Dynamic Shift-Max layers as one per-sample matrix product that
also takes the shuffle after them) and, for comparison, M0 and M3 with the earlier forms: each
``ChannelShuffle`` as one GATHER (which XNNPACK does not run), the stem's layers one by one, and every
Dynamic Shift-Max element-wise.
keras.applications MobileNetV3-Small 1.0 (no preprocessing, random weights) is exported the same way.
All models are timed side by side in one process (``dynzoo.export.compare_latency``: float32, LiteRT
interpreter, XNNPACK, 1 thread, batch 1, 224×224; in each cycle every model runs a short block of
invocations): a model's latency is the median of all its runs, its ratio the median over the cycles of
the per-cycle ratio to MobileNetV3-Small. The issue's targets: MicroNet-M0 ≤ 0.5× and MicroNet-M3 ≤ 1.0×
MobileNetV3-Small.

    python benchmarks/micronet_latency.py [--cycles 200] [--block 5] [--profile micronet_m3]

``--profile NAME`` times, instead, the network cut after each of its stages (stem, blocks, head: one
float32 model per cut, side by side): the difference between two successive cuts is what that stage
costs. Writes benchmarks/results/micronet_latency.{json,md} (profile: micronet_profile_NAME.md).
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
from keras import ops

import dynzoo
from dynzoo.export import convert, op_counts
from dynzoo.export.bench import baseline_builders, model_madds
from dynzoo.export.benchmark import LatencyComparison, compare_latency
from dynzoo.layers.base import SequenceBlock
from dynzoo.layers.micronet import MicroStem
from dynzoo.layers.shift_max import shift_max_form
from dynzoo.layers.shuffle import ChannelShuffle

MICRONETS = ("micronet_m0", "micronet_m1", "micronet_m2", "micronet_m3")
COMPARED = ("micronet_m0", "micronet_m3")  # also exported in the earlier forms
REFERENCE = "mobilenetv3_small_100"
RESULTS = Path(__file__).resolve().parent / "results"


def gather_shuffle(layer: ChannelShuffle, inputs):
    """The earlier export form: one GATHER with the composed permutation."""
    return ops.take(inputs, layer.permutation.astype("int32"), axis=-1)


# The earlier forms: a context in which the model is built and exported in that form.
EARLIER_FORMS = {
    "GATHER shuffles": lambda: mock.patch.object(ChannelShuffle, "call", gather_shuffle),
    "stem layer by layer": lambda: mock.patch.object(MicroStem, "call", SequenceBlock.call),
    "element-wise shift-max": lambda: shift_max_form(matrix=False),
}


def export(name: str, earlier_form: str | None = None) -> tuple[bytes, int]:
    """(float32 flatbuffer, MAdds) of a zoo model (optionally with one of the earlier forms) or the reference."""
    keras.utils.set_random_seed(0)
    if name == REFERENCE:
        model = baseline_builders()[REFERENCE]((224, 224, 3), False)
        return convert(model, "float32"), model_madds(model)
    with EARLIER_FORMS[earlier_form]() if earlier_form else contextlib.nullcontext():
        model = dynzoo.create_model(name, include_preprocessing=False)
        return convert(model, "float32"), model_madds(model)


def side_by_side(flatbuffers: dict[str, bytes], cycles: int, block: int) -> LatencyComparison:
    """Every flatbuffer timed in one process, in alternation; ratios to the first."""
    print(f"[{time.strftime('%H:%M:%S')}] timing {len(flatbuffers)} models side by side ({cycles} cycles)", flush=True)
    result = compare_latency(flatbuffers, warmup=10, cycles=cycles, block=block)
    if not result.ok:
        raise SystemExit(f"timing failed: {result.error}")
    return result


def profile(name: str, cycles: int, block: int) -> None:
    """Latency of ``name`` cut after each stage, and what each stage adds."""
    keras.utils.set_random_seed(0)
    model = dynzoo.create_model(name, include_preprocessing=False)
    cuts = [layer.name for layer in model.layers if layer.name == "stem" or layer.name.startswith("block")]
    flatbuffers = {cut: convert(keras.Model(model.inputs, model.get_layer(cut).output), "float32") for cut in cuts}
    flatbuffers["whole network"] = convert(model, "float32")
    times = side_by_side(flatbuffers, cycles, block)
    lines = [
        f"# {name}: float32 TFLite latency stage by stage",
        "",
        f"Command: `python benchmarks/micronet_latency.py --profile {name} --cycles {cycles} --block {block}` · "
        "the network cut after each stage, float32, XNNPACK, 1 thread, batch 1, 224×224, timed side by "
        "side in one process · "
        f"{platform.machine()}, {os.cpu_count()} logical CPUs (shared) · "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| cut after | output | TFLite ops | latency (ms) | added by the stage (ms) |",
        "|---|---|---:|---:|---:|",
    ]
    previous = 0.0
    for cut, flatbuffer in flatbuffers.items():
        latency = times.median_ms[cut]
        shape = "×".join(
            str(d) for d in (model.output if cut == "whole network" else model.get_layer(cut).output).shape[1:]
        )
        lines.append(
            f"| {cut} | {shape} | {sum(op_counts(flatbuffer).values())} | {latency:.2f} | {latency - previous:+.2f} |"
        )
        previous = latency
    (RESULTS / f"micronet_profile_{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=200, help="alternation cycles (default 200)")
    parser.add_argument("--block", type=int, default=5, help="timed invocations per model and cycle (default 5)")
    parser.add_argument("--profile", metavar="NAME", help="time NAME stage by stage instead")
    args = parser.parse_args()
    if args.profile:
        profile(args.profile, args.cycles, args.block)
        return

    entries = {}
    for name in (REFERENCE, *MICRONETS):
        entries[name] = export(name)
        if name in COMPARED:
            for form in EARLIER_FORMS:
                entries[f"{name} ({form})"] = export(name, form)
        print(f"[{time.strftime('%H:%M:%S')}] exported {name}", flush=True)
    times = side_by_side({key: flatbuffer for key, (flatbuffer, _) in entries.items()}, args.cycles, args.block)

    rows = []
    for key, (flatbuffer, madds) in entries.items():
        counts = op_counts(flatbuffer)
        rows.append(
            {
                "model": key,
                "mmadds": round(madds / 1e6, 1),
                "ops": sum(counts.values()),
                "gather": counts.get("GATHER", 0),
                "transpose": counts.get("TRANSPOSE", 0),
                "latency_ms": round(times.median_ms[key], 3),
                "ratio": round(times.ratio[key], 3),
                "ratio_p10": round(times.ratio_p10[key], 3),
                "ratio_p90": round(times.ratio_p90[key], 3),
            }
        )
    report = {
        "command": f"python benchmarks/micronet_latency.py --cycles {args.cycles} --block {args.block}",
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs (shared)",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "micronet_latency.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# MicroNet vs MobileNetV3-Small: float32 TFLite latency",
        "",
        f"Command: `{report['command']}` · float32, builtin ops, LiteRT interpreter, XNNPACK, 1 thread, "
        f"batch 1, 224×224, timed side by side in one process, {args.cycles} cycles × {args.block} runs each, "
        f"latency = median of all runs, ratio = median of the per-cycle ratios (p10–p90: their 10th–90th "
        f"percentiles) · {report['machine']} · {report['date']}",
        "",
        "| model | MAdds (M) | TFLite ops | GATHER | TRANSPOSE | latency (ms) | ratio to MobileNetV3-Small "
        "| ratio p10–p90 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['model']} | {r['mmadds']} | {r['ops']} | {r['gather']} | {r['transpose']} | {r['latency_ms']:.2f} | "
        f"{r['ratio']:.2f} | {r['ratio_p10']:.2f}–{r['ratio_p90']:.2f} |"
        for r in rows
    ]
    (RESULTS / "micronet_latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
