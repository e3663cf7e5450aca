"""Training-step throughput of dynzoo's networks against the authors' PyTorch MicroNet and a static network
(224×224, batch 64, 1000 classes, this CPU), side by side in one process.

dynzoo models (Keras on TensorFlow, trained in their compute form, ``dynzoo.layers.base.export_form``):
MicroNet-M0 and M3, DCD-MobileNetV2 ×1.0, CDB-ResNet-18 and the static MobileNetV2 ×0.35. With
``--reference DIR``, a checkout of the authors' ``micronet`` repository (fetched for the measurement, never
part of dynzoo) and PyTorch installed (``pip install torch``, never a dynzoo dependency), the authors'
MicroNet-M0 and M3 too, built by their ``MicroNet`` class with the settings of their own training scripts.

Every model takes the same step: SGD with momentum 0.9 (lr 0.1), cross-entropy on logits, one fixed random
batch from memory (the compute ceiling; the input pipeline's share is ``benchmarks/input_pipeline.py``).
After each model's first step (tracing) the models take turns, one step each per round, so that all of
them see the same drift of a shared machine; the first rounds warm up (PyTorch's allocator, the caches),
and the table gives the median timed step of each.

    python benchmarks/train_throughput.py --reference ../micronet    # writes benchmarks/results/train_throughput.md
    python benchmarks/train_throughput.py --models micronet_m0 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import re
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

import dynzoo
from dynzoo._compat import all_layers
from dynzoo.layers import SymmetricConv2D, SymmetricDepthwiseConv2D
from dynzoo.layers.conv import DENSE_DEPTHWISE_MAX_CHANNELS, DENSE_POINTWISE_MAX_MADDS
from dynzoo.profile import profile

MODELS = {
    "micronet_m0": "MicroNet-M0",
    "micronet_m3": "MicroNet-M3",
    "dcd_mobilenetv2_100": "DCD-MobileNetV2 ×1.0",
    "cdb_resnet18": "CDB-ResNet-18",
    "mobilenetv2_035": "MobileNetV2 ×0.35 (static)",
}
# the authors' training scripts whose settings build their M0 and M3
REFERENCE_SCRIPTS = {"micronet_m0": "train_micronet_m0_2gpu.sh", "micronet_m3": "train_micronet_m3_4gpu.sh"}
SIZE, BATCH, CLASSES = 224, 64, 1000
RESULTS = Path(__file__).parent / "results" / "train_throughput.md"
# Seconds of rest before each step, so that the previous step's framework has parked its worker threads.
PAUSE = 0.5


def compute_forms(model: keras.Model) -> str:
    """Which compute form each of the model's grouped 1×1 and unequal-stride depthwise convolutions takes
    (``dynzoo.layers.conv``), counted; BatchNorm trains with the fused kernel in every model."""
    counts: dict[str, int] = {}
    for layer in all_layers(model, include_self=False, recursive=True):
        form = None
        if isinstance(layer, SymmetricConv2D) and layer._grouped_pointwise():
            in_per_group, out = layer.kernel.shape[2:]
            dense = in_per_group * layer.groups * out <= DENSE_POINTWISE_MAX_MADDS
            form = "grouped 1×1 as " + ("block-diagonal GEMM" if dense else "batched GEMM")
        elif isinstance(layer, SymmetricDepthwiseConv2D) and layer.subsample != (1, 1):
            dense = layer.kernel.shape[2] <= DENSE_DEPTHWISE_MAX_CHANNELS
            form = "strided depthwise as " + ("block-diagonal conv" if dense else "folded depthwise")
        if form:
            counts[form] = counts.get(form, 0) + 1
    return "; ".join(["fused BatchNorm", *(f"{n}× {form}" for form, n in sorted(counts.items()))])


def keras_step(name: str, x: np.ndarray, y: np.ndarray) -> Callable[[], None]:
    model = dynzoo.create_model(
        name, weights=None, input_shape=(SIZE, SIZE, 3), classes=CLASSES, classifier_activation=None
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    images, labels = tf.constant(x), tf.constant(y)
    keras_step.forms[name] = compute_forms(model)
    return lambda: model.train_on_batch(images, labels)


keras_step.forms = {}


def reference_model(checkout: Path, name: str):
    """The authors' ``MicroNet`` with the ``MODEL.*`` settings of their training script for ``name``."""
    script = (checkout / "scripts" / REFERENCE_SCRIPTS[name]).read_text()
    options = dict(re.findall(r"MODEL\.(\w+\.\w+) ([^\s\\]+)", script))
    floats = lambda key, default: [float(v) for v in options.get(key, default).split(",")]  # noqa: E731
    micronets = types.SimpleNamespace(
        NET_CONFIG=options["MICRONETS.NET_CONFIG"],
        BLOCK=options["MICRONETS.BLOCK"],
        STEM_MODE=options["MICRONETS.STEM_MODE"],
        STEM_CH=int(options["MICRONETS.STEM_CH"]),
        STEM_DILATION=int(options["MICRONETS.STEM_DILATION"]),
        STEM_GROUPS=[int(v) for v in options["MICRONETS.STEM_GROUPS"].split(",")],
        OUT_CH=int(options["MICRONETS.OUT_CH"]),
        DEPTHSEP=options["MICRONETS.DEPTHSEP"] == "True",
        SHUFFLE=options["MICRONETS.SHUFFLE"] == "True",
        POINTWISE=options["MICRONETS.POINTWISE"],
        DROPOUT=float(options["MICRONETS.DROPOUT"]),
    )
    activation = types.SimpleNamespace(
        MODULE=options["ACTIVATION.MODULE"],
        ACT_MAX=float(options["ACTIVATION.ACT_MAX"]),
        LINEARSE_BIAS=options["ACTIVATION.LINEARSE_BIAS"] == "True",
        LAST_SE_OUP=False,
        INIT_A_BLOCK3=floats("ACTIVATION.INIT_A_BLOCK3", "1.0,0.0"),
        INIT_A=floats("ACTIVATION.INIT_A", "1.0,0.0"),
        INIT_B=floats("ACTIVATION.INIT_B", "0.0,0.0"),
        REDUCTION=int(options["ACTIVATION.REDUCTION"]),
        FC=False,
        ACT="relu",
    )
    sys.path.insert(0, str(checkout))
    from backbone.micronet import MicroNet  # the authors' code, from the checkout

    with contextlib.redirect_stdout(io.StringIO()):  # it prints every block's settings
        return MicroNet(
            types.SimpleNamespace(MODEL=types.SimpleNamespace(MICRONETS=micronets, ACTIVATION=activation)),
            input_size=SIZE,
            num_classes=CLASSES,
        )


def torch_step(checkout: Path, name: str, x: np.ndarray, y: np.ndarray) -> Callable[[], None]:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    model = reference_model(checkout, name).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images, labels = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y.astype("int64"))

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--reference", type=Path, help="a checkout of the authors' micronet repository")
    parser.add_argument("--rounds", type=int, default=6, help="timed steps per model, taken in turns")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds after each model's first step")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.reference is not None and not (args.reference / "backbone" / "micronet.py").is_file():
        parser.error(f"--reference {args.reference}: no backbone/micronet.py there (the authors' micronet checkout)")

    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, SIZE, SIZE, 3)).astype("float32")
    y = rng.integers(0, CLASSES, BATCH).astype("int32")
    steps: dict[tuple[str, str], Callable[[], None]] = {}
    first: dict[tuple[str, str], float] = {}
    for name in args.models:
        steps[(name, "dynzoo")] = keras_step(name, x, y)
        if args.reference is not None and name in REFERENCE_SCRIPTS:
            steps[(name, "authors")] = torch_step(args.reference, name, x, y)
    for key, step in steps.items():
        started = time.perf_counter()
        step()  # tracing
        first[key] = time.perf_counter() - started
        print(f"{key[0]} ({key[1]}): first step {first[key]:.1f} s", flush=True)
    load_before = os.getloadavg()
    times: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
    for round_ in range(args.warmup + args.rounds):
        for key, step in steps.items():
            time.sleep(PAUSE)
            started = time.perf_counter()
            step()
            if round_ >= args.warmup:
                times[key].append(time.perf_counter() - started)
        if round_ >= args.warmup:
            print(
                f"round {round_ + 1 - args.warmup}/{args.rounds}, images/s: "
                + ", ".join(f"{k[0]} ({k[1]}) {BATCH / t[-1]:.1f}" for k, t in times.items()),
                flush=True,
            )
    load_after = os.getloadavg()

    implementations = {"dynzoo": "dynzoo (Keras/TF)"}
    if args.reference is not None:
        import torch

        implementations["authors"] = f"authors' PyTorch {torch.__version__}"
    speed = {key: BATCH / statistics.median(t) for key, t in times.items()}
    static = speed.get(("mobilenetv2_035", "dynzoo"))
    rows = []
    for (name, impl), ips in speed.items():
        madds = profile(dynzoo.create_model(name, weights=None, input_shape=(SIZE, SIZE, 3))).madds / 1e6
        authors = speed.get((name, "authors"))
        rows.append(
            "| "
            + " | ".join(
                [
                    MODELS[name],
                    implementations[impl],
                    f"{madds:.1f}",
                    f"{first[(name, impl)]:.1f}",
                    f"{ips:.1f}",
                    f"**{ips / authors:.2f}×**" if authors and impl == "dynzoo" else "",
                    f"{ips / static:.2f}×" if static else "",
                    keras_step.forms[name] if impl == "dynzoo" else "PyTorch eager",
                ]
            )
            + " |"
        )
    lines = [
        "# Training-step throughput (224×224, batch 64, 1000 classes, CPU)",
        "",
        (
            f"Command: `python benchmarks/train_throughput.py{' --reference <micronet checkout>' if args.reference else ''}"
            f" --rounds {args.rounds} --warmup {args.warmup}`. Machine: {os.cpu_count()} CPU cores "
            f"({platform.processor() or platform.machine()}), TensorFlow {tf.__version__}, Keras {keras.__version__}; "
            f"load average {load_before[0]:.1f} before the timed rounds and {load_after[0]:.1f} after (shared cores: "
            "compare the rows of one run, whose steps were taken in turns)."
        ),
        "",
        "| model | implementation | MAdds (M) | first step (s) | images/s (median step) | to the authors' "
        "| to static MobileNetV2 ×0.35 | form |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
