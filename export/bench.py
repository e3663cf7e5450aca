"""``dynzoo bench``: TFLite latency of zoo models beside keras.applications baselines exported the same
way, measured side by side in one run (each measurement in a fresh subprocess, :mod:`.benchmark`)."""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras

from dynzoo.export.benchmark import measure_latency

REFERENCE = "mobilenetv3_small_100"  # the denominator of the latency ratios


def baseline_builders() -> dict[str, Callable[..., keras.Model]]:
    """keras.applications models compared with the zoo (random weights: latency does not depend on them)."""
    apps = keras.applications
    return {
        "mobilenetv3_small_100": lambda shape, pre: apps.MobileNetV3Small(
            input_shape=shape, weights=None, include_preprocessing=pre
        ),
        "mobilenetv3_large_100": lambda shape, pre: apps.MobileNetV3Large(
            input_shape=shape, weights=None, include_preprocessing=pre
        ),
        "mobilenetv2_100": lambda shape, pre: _with_rescaling(apps.MobileNetV2(input_shape=shape, weights=None), pre),
    }


def _with_rescaling(model: keras.Model, preprocessing_in_model: bool) -> keras.Model:
    """MobileNetV2 has no ``include_preprocessing``: add its [-1, 1] rescaling in front on request."""
    if not preprocessing_in_model:
        return model
    inputs = keras.Input(model.inputs[0].shape[1:])
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocessing")(inputs)
    return keras.Model(inputs, model(x), name=model.name)


def model_madds(model: keras.Model) -> int:
    """MAdds of one sample (papers' convention): the zoo's exact profiler for zoo models; for the
    baselines, the sum over their convolution and dense layers."""
    from dynzoo.layers.base import count_madds

    total = 0
    for layer in model.layers:
        if not isinstance(layer.input, list):
            total += count_madds(layer, tuple(layer.input.shape))
    return total


def run_bench(
    models: Sequence[str],
    *,
    modes: Sequence[str] = ("float32",),
    threads: Sequence[int] = (1, 2),
    xnnpack: Sequence[bool] = (True, False),
    input_size: int = 224,
    runs: int = 100,
    warmup: int = 10,
    rounds: int = 3,
    baselines: bool = True,
    preprocessing_in_model: bool = False,
    calibration_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Export every model in every mode, then time every (threads, XNNPACK) setting.

    Each setting is measured in ``rounds`` rounds that go through all models in turn (so that load
    from other processes hits all models alike); a result is the median over the rounds of each
    round's median (and p90). Returns ``{"environment": …, "results": [row, …]}``.
    """
    from dynzoo.export.tflite import CALIBRATED_MODES, convert_modes
    from dynzoo.export.verify import load_images, model_inputs
    from dynzoo.models.common import IMAGENET_MEAN, IMAGENET_STD
    from dynzoo.registry import create_model

    shape = (input_size, input_size, 3)
    builders: dict[str, tuple[str, Callable[[], keras.Model]]] = {
        name: (
            "dynzoo",
            lambda n=name: create_model(n, input_shape=shape, include_preprocessing=preprocessing_in_model),
        )
        for name in models
    }
    if baselines:
        for name, build in baseline_builders().items():
            builders[name] = ("keras.applications", lambda b=build: b(shape, preprocessing_in_model))
    calibration = None
    if any(m in CALIBRATED_MODES for m in modes):
        images, _, _ = load_images("digits", "train", input_size, calibration_size)
        calibration = images

    exported = []
    for index, (name, (source, build)) in enumerate(builders.items(), start=1):
        model = build()
        if progress:
            print(f"[{index}/{len(builders)}] exporting {name} ({', '.join(modes)})", flush=True)
        data = None
        if calibration is not None:
            # keras.applications baselines without preprocessing expect [-1, 1]; ours ImageNet mean/std
            mean, std = ((0.5,) * 3, (0.5,) * 3) if source != "dynzoo" else (IMAGENET_MEAN, IMAGENET_STD)
            data = model_inputs(calibration, preprocessing_in_model=preprocessing_in_model, mean=mean, std=std)
        info = {"model": name, "source": source, "madds": model_madds(model), "params": model.count_params()}
        for mode, flatbuffer in convert_modes(model, modes, data).items():
            exported.append({**info, "mode": mode, "size_bytes": len(flatbuffer), "flatbuffer": flatbuffer})
        keras.backend.clear_session()

    settings = [(t, x) for x in xnnpack for t in threads]
    rows = []
    total = len(settings) * rounds * len(exported)
    done = 0
    for num_threads, use_xnnpack in settings:
        per_model: list[list] = [[] for _ in exported]
        for _ in range(rounds):
            for i, entry in enumerate(exported):
                per_model[i].append(
                    measure_latency(
                        entry["flatbuffer"],
                        num_threads=num_threads,
                        xnnpack=use_xnnpack,
                        warmup=warmup,
                        runs=runs,
                        name=f"{entry['model']}_{entry['mode']}",
                    )
                )
                done += 1
                if progress and done % max(1, total // 20) == 0:
                    print(f"  timed {done}/{total}", flush=True)
        for entry, results in zip(exported, per_model, strict=False):
            rows.append(_row(entry, num_threads, use_xnnpack, results))
    return {"environment": _environment(runs, warmup, rounds, input_size, preprocessing_in_model), "results": rows}


def _row(entry: dict, num_threads: int, xnnpack: bool, results: list) -> dict[str, Any]:
    row = {k: v for k, v in entry.items() if k != "flatbuffer"}
    row.update(threads=num_threads, xnnpack=xnnpack)
    good = [r for r in results if r.ok]
    if not good:
        row.update(median_ms=None, p90_ms=None, peak_memory_mb=None, error=results[0].error)
        return row
    row.update(
        median_ms=statistics.median(r.median_ms for r in good),
        p90_ms=statistics.median(r.p90_ms for r in good),
        min_ms=min(r.min_ms for r in good),
        peak_memory_mb=max(r.peak_memory_mb for r in good),
        error=None if len(good) == len(results) else next(r.error for r in results if not r.ok),
    )
    return row


def _environment(runs, warmup, rounds, input_size, preprocessing_in_model) -> dict[str, Any]:
    from importlib.metadata import version

    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    return {
        "cpu": cpu,
        "machine": platform.machine(),
        "ai_edge_litert": version("ai-edge-litert"),
        "tensorflow": version("tensorflow-cpu") if _has("tensorflow-cpu") else version("tensorflow"),
        "batch": 1,
        "input_size": input_size,
        "runs": runs,
        "warmup": warmup,
        "rounds": rounds,
        "preprocessing_in_model": preprocessing_in_model,
    }


def _has(distribution: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(distribution)
        return True
    except PackageNotFoundError:
        return False


def _reference_latency(results: list[dict]) -> float | None:
    for r in results:
        if r["model"] == REFERENCE and r["mode"] == "float32" and r["threads"] == 1 and r["xnnpack"]:
            return r["median_ms"]
    return None


def markdown_table(bench: dict[str, Any]) -> str:
    """One row per model and mode: MAdds, size, and median / p90 latency of every setting; the ratio
    to MobileNetV3-Small 1.0 (float32, 1 thread, XNNPACK) of the same run."""
    results = bench["results"]
    settings = sorted({(r["threads"], r["xnnpack"]) for r in results}, key=lambda s: (not s[1], s[0]))
    reference = _reference_latency(results)
    header = ["model", "mode", "MAdds (M)", "size (KiB)"]
    header += [f"{t} thr{'' if x else ' no-XNNPACK'} median / p90 (ms)" for t, x in settings]
    header += ["peak mem (MiB)"]
    if reference:
        header.append("× MobileNetV3-Small (fp32, 1 thr)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keys = list(dict.fromkeys((r["model"], r["mode"]) for r in results))
    for model, mode in keys:
        rows = {(r["threads"], r["xnnpack"]): r for r in results if r["model"] == model and r["mode"] == mode}
        any_row = next(iter(rows.values()))
        cells = [model, mode, f"{any_row['madds'] / 1e6:.1f}", f"{any_row['size_bytes'] / 1024:.0f}"]
        for setting in settings:
            r = rows.get(setting)
            cells.append(
                "failed" if r is None or r["median_ms"] is None else f"{r['median_ms']:.2f} / {r['p90_ms']:.2f}"
            )
        memory = [r["peak_memory_mb"] for r in rows.values() if r["peak_memory_mb"] is not None]
        cells.append(f"{max(memory):.0f}" if memory else "–")
        if reference:
            r = rows.get((1, True))
            cells.append(f"{r['median_ms'] / reference:.2f}" if r and r["median_ms"] else "–")
        lines.append("| " + " | ".join(cells) + " |")
    env = bench["environment"]
    lines.append("")
    lines.append(
        f"Batch 1, {env['input_size']}×{env['input_size']}, {env['runs']} timed runs after "
        f"{env['warmup']} warm-up, median of {env['rounds']} rounds; {env['cpu']}, "
        f"ai-edge-litert {env['ai_edge_litert']}."
    )
    return "\n".join(lines)


class MissingExtraError(ImportError, ValueError):
    """An optional dependency is not installed. An ImportError, and a ValueError so that the ``dynzoo``
    command prints it as one error line (exit status 2)."""


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend, imported on first use: matplotlib is the ``bench``
    extra, not a requirement of the package. Without it, a :class:`MissingExtraError` that names the extra."""
    try:
        import matplotlib
    except ModuleNotFoundError as e:
        raise MissingExtraError(
            'the PNG charts of `dynzoo bench` need matplotlib: pip install "dynzoo[bench]"', name="matplotlib"
        ) from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(bench: dict[str, Any], path: str | Path) -> Path:
    """PNG: latency (1 thread, XNNPACK) vs MAdds, one point per model and mode."""
    plt = pyplot()
    points = [r for r in bench["results"] if r["threads"] == 1 and r["xnnpack"] and r["median_ms"]]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    markers = {}
    for r in points:
        marker = markers.setdefault(r["mode"], "osD^v<>p"[len(markers) % 8])
        color = "tab:blue" if r["source"] == "dynzoo" else "tab:orange"
        ax.scatter(r["madds"] / 1e6, r["median_ms"], marker=marker, color=color)
        ax.annotate(
            f"{r['model']} {r['mode']}",
            (r["madds"] / 1e6, r["median_ms"]),
            fontsize=7,
            xytext=(4, 2),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel("MAdds (millions, log scale)")
    ax.set_ylabel("median latency (ms), 1 thread, XNNPACK")
    ax.set_title("TFLite latency vs MAdds (blue: dynzoo, orange: keras.applications)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def write_results(bench: dict[str, Any], stem: str | Path) -> list[Path]:
    """``STEM.json``, ``STEM.md`` and ``STEM.png``."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(bench, indent=2) + "\n")
    md_path.write_text(markdown_table(bench) + "\n")
    return [json_path, md_path, plot(bench, stem.with_suffix(".png"))]
