"""Training-step time of MicroNet in the compute form against the export form (``dynzoo/layers/conv.py``),
side by side in one process: the same network and weights, compiled as ``dynzoo train`` compiles it, one
traced in each form. The export form is how every MicroNet trained before the compute form existed (each
grouped 1×1 and unequal-stride depthwise convolution an XLA-compiled island inside the graph).

    python benchmarks/compute_forms.py            # writes benchmarks/results/compute_forms.md
    python benchmarks/compute_forms.py --steps 3 --settings micronet_m0:32:64
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from timing import time_train_steps

import dynzoo
from dynzoo.layers.base import export_form
from dynzoo.train.recipes import get_recipe
from dynzoo.train.trainer import compile_for_recipe

RESULTS = Path(__file__).parent / "results" / "compute_forms.md"
# model:input size:batch — the quickstart's setting (32×32 digits) and ImageNet's (smaller batch: the
# export form's steps take seconds here)
SETTINGS = ("micronet_m0:32:64", "micronet_m0:224:16", "micronet_m3:224:16")


def compiled(name: str, size: int, weights=None):
    model = dynzoo.create_model(name, input_shape=(size, size, 3), classes=10)
    if weights is not None:
        model.set_weights(weights)
    recipe = get_recipe("micronet_m0")
    compile_for_recipe(model, recipe, recipe.lr, 100, classes=10)
    return model


def measure(name: str, size: int, batch: int, steps: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, size, size, 3)).astype("float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, batch)]
    compute = compiled(name, size)
    export = compiled(name, size, compute.get_weights())
    # the export form's step is traced (and its XLA islands compiled) inside export_form()
    first, step = time_train_steps(
        {"compute": compute, "export": export}, x, y, steps, first_step_context={"export": export_form}
    )
    return {
        "first_compute": first["compute"],
        "first_export": first["export"],
        "step_compute": step["compute"],
        "step_export": step["export"],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), help="model:size:batch")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = []
    for setting in args.settings:
        name, size, batch = setting.split(":")
        r = measure(name, int(size), int(batch), args.steps)
        rows.append(
            f"| {name} | {size}×{size} | {batch} | {r['step_export'] * 1000:.0f} | {r['step_compute'] * 1000:.0f} "
            f"| **{r['step_export'] / r['step_compute']:.2f}×** | {r['first_export']:.1f} | {r['first_compute']:.1f} |"
        )
        print(rows[-1], flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = "\n".join(
        [
            "# Training step: compute form against export form",
            "",
            f"Command: `python benchmarks/compute_forms.py --steps {args.steps}`. Machine: {os.cpu_count()} CPU cores "
            f"({platform.machine()}), load average {load:.1f} at the end (shared). Steps alternate between the two "
            "models in one process; the first step (tracing, and XLA compilation in the export form) is apart.",
            "",
            "| model | input | batch | export form ms/step | compute form ms/step | speed-up | first step export (s) | first step compute (s) |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
