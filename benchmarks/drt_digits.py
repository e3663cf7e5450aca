"""DRT vs static transfer on the offline Digit-five-like benchmark (thesis Table 6.3's setting, offline).

Sources: labelled digits under several appearance domains (dynzoo.data.domains); target: one held-out
domain, seen unlabelled during training and evaluated on its test split. Both networks are the same LeNet
(``drt_lenet`` with a dynamic residual on every conv, ``drt_lenet_static`` without), trained by
``dynzoo train --task msda``'s function with the same recipe, alignment loss and seeds.

    python benchmarks/drt_digits.py --seeds 0 1 2 3 4
writes benchmarks/results/drt_digits.{json,md} (``--output`` renames them).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import dynzoo.models  # noqa: F401  (registers the models)
from dynzoo.cli import hyphenate_flags
from dynzoo.train import TrainConfig
from dynzoo.train.msda import train_msda

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", default="clean,inverted,rotated,noisy")
    parser.add_argument("--target", default="colour_background")
    parser.add_argument("--alignment", default="mmd")
    parser.add_argument("--alignment-weight", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="iterations per epoch (batch 64)")
    parser.add_argument("--models", nargs="+", default=["drt_lenet_static", "drt_lenet"])
    parser.add_argument("--output", default="drt_digits", help="results file name (without extension)")
    args = parser.parse_args(hyphenate_flags(sys.argv[1:]))

    # Runs already in the results file with the same settings are kept (adding seeds reruns nothing).
    path = RESULTS / f"{args.output}.json"

    def settings(values: dict) -> dict:
        return {k: v for k, v in values.items() if k not in ("seeds", "output")}

    previous = json.loads(path.read_text()) if path.exists() else None
    same = previous is not None and settings(previous["settings"]) == settings(vars(args))
    done = {(r["model"], r["seed"]): r for r in previous["runs"]} if same else {}
    runs = []
    for seed in args.seeds:
        for model in args.models:  # side by side, same seed
            if (model, seed) in done:
                runs.append(done[(model, seed)])
                continue
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as model_dir:
                result = train_msda(
                    TrainConfig(
                        model=model,
                        dataset="digits",
                        overrides={"epochs": args.epochs},
                        steps_per_epoch=args.steps,
                        model_dir=model_dir,
                        verbose=0,
                        seed=seed,
                        options={
                            "source_domains": args.sources,
                            "target_domain": args.target,
                            "alignment": args.alignment,
                            "alignment_weight": args.alignment_weight,
                        },
                    )
                )
            run = {
                "model": model,
                "seed": seed,
                "params": result.summary["params"],
                "source_top1": result.summary["source_test_top1"],
                "target_top1": result.summary["target_test_top1"],
                "seconds": round(time.perf_counter() - started, 1),
            }
            print(json.dumps(run), flush=True)
            runs.append(run)

    table = {}
    for model in args.models:
        target = [r["target_top1"] for r in runs if r["model"] == model]
        source = [r["source_top1"] for r in runs if r["model"] == model]
        table[model] = {
            "target_mean": float(np.mean(target)),
            "target_std": float(np.std(target)),
            "source_mean": float(np.mean(source)),
            "seeds": len(target),
        }
    out = {"settings": vars(args), "runs": runs, "summary": table}
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    lines = [
        f"# DRT vs static transfer, offline digits: sources {args.sources} → target {args.target}",
        "",
        (
            f"`python benchmarks/drt_digits.py` — alignment {args.alignment} (λ = {args.alignment_weight}), "
            f"{args.epochs} epochs × {args.steps} steps, batch 64, seeds {args.seeds}."
        ),
        "",
        "| model | params | target top-1 (mean ± std) | source top-1 (mean) | per seed (target) |",
        "|---|---|---|---|---|",
    ]
    for model, row in table.items():
        per_seed = ", ".join(f"{100 * r['target_top1']:.2f}" for r in runs if r["model"] == model)
        params = next(r["params"] for r in runs if r["model"] == model)
        lines.append(
            f"| {model} | {params:,} | {100 * row['target_mean']:.2f} ± {100 * row['target_std']:.2f} | "
            f"{100 * row['source_mean']:.2f} | {per_seed} |"
        )
    (RESULTS / f"{args.output}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
