"""Accuracy kept by every export mode on real data: train a dynamic model on the offline digits
(scikit-learn, 32×32 RGB), export it in every mode and evaluate Keras and TFLite on the 450 test images.

    python benchmarks/quantization_accuracy.py [micronet_m0 dcd_mobilenetv2_050] [--epochs 30]

Writes benchmarks/results/quantization_accuracy.{json,md} (models not given keep their earlier rows): per
model and mode the accuracy of both, top-1 agreement, size, latency (1 thread, XNNPACK, 32×32), and the
worst layers of naive int8. Training is ``dynzoo train``'s digits recipe (SGD, cosine, crop augmentation)
with the per-model learning rates below.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
IMAGE_SIZE = 32
# Measured (tests/test_train.py): DCD-MobileNetV2 ×0.5 barely moves at the digits recipe's lr 0.1.
RECIPE_OVERRIDES = {"dcd_mobilenetv2_050": {"lr": 0.02}}


def train(name: str, epochs: int, seed: int = 0):
    """A model trained on the digits' training split (1,347 images) by ``dynzoo.train`` (logits out)."""
    import tempfile

    from dynzoo.train import TrainConfig
    from dynzoo.train import train as run

    overrides = {"epochs": epochs, "input_size": IMAGE_SIZE, "dropout": 0.0, **RECIPE_OVERRIDES.get(name, {})}
    with tempfile.TemporaryDirectory() as run_dir:
        return run(
            TrainConfig(
                model=name,
                dataset="digits",
                overrides=overrides,
                model_dir=run_dir,
                seed=seed,
                validation_freq=0,
                verbose=0,
            )
        ).model


def evaluate(name: str, epochs: int, modes) -> dict:
    from dynzoo.data import digits_arrays
    from dynzoo.export import convert_modes
    from dynzoo.export.benchmark import measure_latency
    from dynzoo.export.tflite import full_range_first
    from dynzoo.export.verify import layer_errors, parity_report

    model = train(name, epochs)
    x_train, _ = digits_arrays("train", IMAGE_SIZE)
    x_test, y_test = digits_arrays("test", IMAGE_SIZE)
    calibration = full_range_first(x_train[:128].astype("float32"))
    x_test = x_test.astype("float32")
    rows = {}
    for mode, flatbuffer in convert_modes(model, modes, calibration).items():
        report = parity_report(model, flatbuffer, x_test, y_test)
        latency = measure_latency(flatbuffer, runs=200, warmup=20)
        rows[mode] = {**report, "size_bytes": len(flatbuffer), "latency_ms": latency.median_ms}
        print(f"{name} {mode}: {rows[mode]}", flush=True)
    worst = layer_errors(model, "int8", calibration, x_test[:64], top=10)
    return {"epochs": epochs, "modes": rows, "worst_int8_layers": worst}


def markdown(results: dict) -> str:
    lines = []
    for name, r in results.items():
        lines += [
            f"### {name} (digits, {IMAGE_SIZE}×{IMAGE_SIZE}, {r['epochs']} epochs, 450 test images)",
            "",
            "| mode | Keras top-1 | TFLite top-1 | Δ (points) | agreement | size (KiB) | latency (ms) |",
            "|---|---|---|---|---|---|---|",
        ]
        for mode, m in r["modes"].items():
            delta = 100 * (m["tflite_accuracy"] - m["keras_accuracy"])
            lines.append(
                f"| {mode} | {100 * m['keras_accuracy']:.1f} | {100 * m['tflite_accuracy']:.1f} | "
                f"{delta:+.1f} | {100 * m['top1_agreement']:.1f}% | {m['size_bytes'] / 1024:.0f} | "
                f"{m['latency_ms']:.3f} |"
            )
        lines += [
            "",
            "Worst layers of naive int8 (QuantizationDebugger, RMSE in quantization steps; 0.29 = rounding only):",
            "",
            "| op | layer | RMSE / scale |",
            "|---|---|---|",
        ]
        lines += [f"| {w['op']} | {w['layer']} | {w['rmse_per_scale']:.2f} |" for w in r["worst_int8_layers"]]
        lines.append("")
    return "\n".join(lines)


def save_results(stem: str, new: dict, to_markdown) -> None:
    """Merge ``new`` (per model) into ``results/<stem>.json`` (models not rerun keep their rows), write
    ``results/<stem>.md`` from the merged results and print it."""
    saved = RESULTS / f"{stem}.json"
    results = json.loads(saved.read_text()) if saved.exists() else {}
    results.update(new)
    RESULTS.mkdir(exist_ok=True)
    saved.write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(to_markdown(results))
    print(to_markdown(results))


def main() -> None:
    from dynzoo.export import MODES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["micronet_m0", "dcd_mobilenetv2_050"])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    save_results("quantization_accuracy", {name: evaluate(name, args.epochs, MODES) for name in args.models}, markdown)


if __name__ == "__main__":
    main()
