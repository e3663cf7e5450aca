"""TFLite latency of MicroNet-M0…M3 beside keras.applications MobileNetV3-Small/-Large and MobileNetV2,
exported the same way (batch 1, 224×224, no preprocessing inside), float32 and int8, XNNPACK on/off,
1 and 2 threads, measured side by side in one run. The same as

    dynzoo bench micronet_m0 micronet_m1 micronet_m2 micronet_m3 --mode float32 --mode int8 \\
        --runs 100 --rounds 3 -o benchmarks/results/tflite_latency

Writes benchmarks/results/tflite_latency.{json,md,png}.
"""

from pathlib import Path

from dynzoo.cli import main

if __name__ == "__main__":
    stem = Path(__file__).resolve().parent / "results" / "tflite_latency"
    raise SystemExit(
        main(
            [
                "bench",
                "micronet_m0",
                "micronet_m1",
                "micronet_m2",
                "micronet_m3",
                "--mode",
                "float32",
                "--mode",
                "int8",
                "--runs",
                "100",
                "--rounds",
                "3",
                "-o",
                str(stem),
            ]
        )
    )
