"""What quantization-aware training (``dynzoo.export.qat``) changes in the int8 export, on real data:
train a network on the offline digits (32×32), export it to int8 as is, fine-tune a copy with
fake quantization and export that to int8, and compare both with the float network on the 450 test images.

    python benchmarks/qat_accuracy.py [micronet_m0 dcd_mobilenetv2_050] [--epochs 30] [--qat-epochs 2]

Writes benchmarks/results/qat_accuracy.{json,md}. Training is the one of quantization_accuracy.py
(``dynzoo train``'s digits recipe); the int8 calibration images are the same 128 training images for both.
"""

from __future__ import annotations

import argparse
import sys
import time

from quantization_accuracy import IMAGE_SIZE, save_results, train

from dynzoo.cli import hyphenate_flags


def evaluate(name: str, epochs: int, qat_epochs: int, learning_rate: float) -> dict:
    import keras

    from dynzoo.data import digits_arrays
    from dynzoo.export import convert, run_tflite
    from dynzoo.export.qat import quantization_aware_training
    from dynzoo.export.tflite import full_range_first

    model = train(name, epochs)
    x_train, y_train = digits_arrays("train", IMAGE_SIZE)
    x_test, y_test = digits_arrays("test", IMAGE_SIZE)
    x_train, x_test = x_train.astype("float32"), x_test.astype("float32")
    calibration = full_range_first(x_train[:128])
    float_logits = model.predict(x_test, verbose=0)

    def row(logits, seconds=None):
        return {
            "top1": float((logits.argmax(-1) == y_test).mean()),
            "agreement_with_float": float((logits.argmax(-1) == float_logits.argmax(-1)).mean()),
            **({"seconds": seconds} if seconds is not None else {}),
        }

    rows = {
        "float (Keras)": row(float_logits),
        "int8": row(run_tflite(convert(model, "int8", representative_data=calibration), x_test)),
    }
    tuned = keras.models.clone_model(model)
    tuned.set_weights(model.get_weights())
    started = time.perf_counter()
    result = quantization_aware_training(
        tuned, x_train, y_train, calibration=calibration, epochs=qat_epochs, learning_rate=learning_rate, verbose=0
    )
    seconds = time.perf_counter() - started
    rows["QAT float (Keras)"] = row(tuned.predict(x_test, verbose=0), seconds)
    rows["QAT → int8"] = row(run_tflite(convert(tuned, "int8", representative_data=calibration), x_test))
    for label, r in rows.items():
        print(f"{name} {label}: {r}", flush=True)
    return {
        "epochs": epochs,
        "qat_epochs": qat_epochs,
        "learning_rate": learning_rate,
        "fake_quantized_tensors": result.points,
        "qat_losses": result.losses,
        "rows": rows,
    }


def markdown(results: dict) -> str:
    lines = []
    for name, r in results.items():
        lines += [
            f"### {name} (digits, {IMAGE_SIZE}×{IMAGE_SIZE}, {r['epochs']} epochs; QAT {r['qat_epochs']} "
            f"epochs at Adam {r['learning_rate']:g}, {r['fake_quantized_tensors']} fake-quantized tensors)",
            "",
            "| model | top-1 | Δ vs float (points) | top-1 agreement with float |",
            "|---|---|---|---|",
        ]
        base = r["rows"]["float (Keras)"]["top1"]
        for label, m in r["rows"].items():
            lines.append(
                f"| {label} | {100 * m['top1']:.1f} | {100 * (m['top1'] - base):+.1f} | "
                f"{100 * m['agreement_with_float']:.1f}% |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["micronet_m0", "dcd_mobilenetv2_050"])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    args = parser.parse_args(hyphenate_flags(sys.argv[1:]))
    save_results(
        "qat_accuracy",
        {name: evaluate(name, args.epochs, args.qat_epochs, args.learning_rate) for name in args.models},
        markdown,
    )


if __name__ == "__main__":
    main()
