"""Training-step time with the fused optimizers (``dynzoo/train/optimizers.py``) against Keras' own, side by
side in one process: the same network and weights, compiled as ``dynzoo train`` compiles it, once with
``FusedAdam``/``FusedSGD`` and once with ``keras.optimizers.Adam``/``SGD`` (same hyper-parameters).

    python benchmarks/fused_optimizers.py         # writes benchmarks/results/fused_optimizers.md
    python benchmarks/fused_optimizers.py --steps 3 --settings micronet_m0:32:64:sgd
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from timing import time_train_steps

import dynzoo
from dynzoo.train import trainer
from dynzoo.train.recipes import get_recipe

RESULTS = Path(__file__).parent / "results" / "fused_optimizers.md"
# model:input size:batch:optimizer — the quickstart's MicroNet (SGD, Nesterov), a DRNet and a DCD network
# with Adam (DRNet: hundreds of small variables, one BN per candidate branch)
SETTINGS = ("micronet_m0:32:64:sgd", "drnet_s:32:64:adam", "dcd_mobilenetv2_050:32:64:adam")


def compiled(name: str, size: int, optimizer: str, fused: bool, weights=None):
    model = dynzoo.create_model(name, input_shape=(size, size, 3), classes=10)
    if weights is not None:
        model.set_weights(weights)
    recipe = get_recipe("digits").replace(optimizer=optimizer)
    keras_classes = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}
    original = trainer._optimizer
    if not fused:  # the same schedule and hyper-parameters in Keras' class

        def keras_optimizer(*args):
            built = original(*args)
            return keras_classes[optimizer].from_config(built.get_config())

        trainer._optimizer = keras_optimizer
    try:
        trainer.compile_for_recipe(model, recipe, recipe.lr, 100, classes=10)
    finally:
        trainer._optimizer = original
    return model


def measure(name: str, size: int, batch: int, optimizer: str, steps: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, size, size, 3)).astype("float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, batch)]
    fused = compiled(name, size, optimizer, True)
    plain = compiled(name, size, optimizer, False, fused.get_weights())
    first, step = time_train_steps({"fused": fused, "keras": plain}, x, y, steps)
    return {
        "variables": len(fused.trainable_variables),
        "first_fused": first["fused"],
        "first_keras": first["keras"],
        "step_fused": step["fused"],
        "step_keras": step["keras"],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), help="model:size:batch:optimizer")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = []
    for setting in args.settings:
        name, size, batch, optimizer = setting.split(":")
        r = measure(name, int(size), int(batch), optimizer, args.steps)
        rows.append(
            f"| {name} | {size}×{size} | {batch} | {optimizer} | {r['variables']} "
            f"| {r['step_keras'] * 1000:.0f} | {r['step_fused'] * 1000:.0f} | **{r['step_keras'] / r['step_fused']:.2f}×** "
            f"| {r['first_keras']:.1f} | {r['first_fused']:.1f} | **{r['first_keras'] / r['first_fused']:.2f}×** |"
        )
        print(rows[-1], flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = "\n".join(
        [
            "# Training step: fused optimizers against Keras' own",
            "",
            f"Command: `python benchmarks/fused_optimizers.py --steps {args.steps}`. Machine: {os.cpu_count()} CPU "
            f"cores ({platform.machine()}), load average {load:.1f} at the end (shared). Steps alternate between the "
            "two models in one process; the first step (tracing and instantiating the step's graph) is apart.",
            "",
            "| model | input | batch | optimizer | trainable variables | Keras ms/step | fused ms/step | speed-up "
            "| first step Keras (s) | first step fused (s) | first-step speed-up |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
