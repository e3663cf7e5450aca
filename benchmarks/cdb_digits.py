"""CDB-ResNet on the offline digits at 32×32: trained with a target FLOPs ratio, against the same network
trained with every group on.

Both runs go through ``dynzoo.train.train`` (what ``dynzoo train --model cdb_resnet10_cifar --dataset
digits --target-flops 0.6 --category-map digits`` runs) with the ``digits`` recipe and the same seed. The
gated run trains with the paper's losses (category loss on the digits map, execution-rate and FLOPs-ratio
losses at the target); the baseline uses ``all_groups_on`` (every gate forced on, controllers frozen). Then,
on the 450 test images, in inference mode: accuracy, the measured FLOPs ratio (mean effective MAdds over
all-on MAdds, from the executed gates) and the per-stage execution rates.

    python benchmarks/cdb_digits.py            # writes benchmarks/results/cdb_digits.{md,json}
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from dynzoo.cli import hyphenate_flags


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cdb_resnet10_cifar")
    p.add_argument("--target-flops", type=float, default=0.6)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=str(Path(__file__).parent / "results" / "cdb_digits"))
    return p.parse_args(hyphenate_flags(sys.argv[1:]))


def train_network(model: str, epochs: int, seed: int, options: dict, model_dir: str):
    """Train ``model`` on digits through ``dynzoo.train.train`` with the CDB ``options``."""
    from dynzoo.train import TrainConfig, train

    return train(
        TrainConfig(
            model=model,
            dataset="digits",
            overrides={"epochs": epochs},
            seed=seed,
            model_dir=model_dir,
            resume=False,
            verbose=2,
            options=options,
        )
    )


def main():
    args = parse_args()
    from dynzoo.data import digits_arrays
    from dynzoo.models.cdb import analyze_gates, check_target_rate

    check_target_rate("target_flops", args.target_flops)
    x_test, y_test = digits_arrays("test", 32)
    runs = {}
    variants = (
        ("all_on", {"all_groups_on": True}),
        ("gated", {"target_flops": args.target_flops, "category_map": "digits"}),
    )
    for label, options in variants:
        with tempfile.TemporaryDirectory(prefix="cdb_digits_") as tmp:
            result = train_network(args.model, args.epochs, args.seed, options, tmp)
        report = analyze_gates(result.model, x_test.astype("float32"))
        runs[label] = {
            "options": options,
            "train_seconds": result.summary["train_seconds"],
            "trainer_test_top1": result.summary["test_top1"],
            "accuracy": float((report.outputs.argmax(-1) == y_test).mean()),
            "flops_ratio": report.flops_ratio,
            "execution_rate": report.execution_rate,
            "effective_mmadds": float(report.madds.mean() / 1e6),
            "all_on_mmadds": report.costs.total / 1e6,
            "flops_ratio_min_max": [
                float(report.madds.min() / report.costs.total),
                float(report.madds.max() / report.costs.total),
            ],
            "stages": report.stage_figures(),
            "stage_table": report.stage_table(),
            "history": {k: [float(v) for v in vs] for k, vs in result.history.items()},
        }
        print(label, runs[label]["accuracy"], runs[label]["flops_ratio"], flush=True)
    drop = 100 * (runs["all_on"]["accuracy"] - runs["gated"]["accuracy"])
    result = {
        "model": args.model,
        "input": "digits 32x32 (1347 train / 450 test)",
        "recipe": "digits",
        "epochs": args.epochs,
        "seed": args.seed,
        "target_flops": args.target_flops,
        "accuracy_drop_points": drop,
        "runs": runs,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    g, a = runs["gated"], runs["all_on"]
    lines = [
        f"# {args.model} on digits 32×32, target FLOPs ratio {args.target_flops} — `python benchmarks/cdb_digits.py`",
        "",
        (
            f"`dynzoo.train.train`, recipe `digits` ({args.epochs} epochs, seed {args.seed}, same initial weights). "
            f"All-on MAdds {a['all_on_mmadds']:.2f} M."
        ),
        "",
        (
            "| run | test accuracy | measured FLOPs ratio (test split) | per-sample range | execution rate | "
            "mean MAdds (M) | training time |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for label, run in (("all groups on", a), (f"CDB, target {args.target_flops}", g)):
        lo, hi = run["flops_ratio_min_max"]
        lines.append(
            f"| {label} | {run['accuracy']:.2%} | {run['flops_ratio']:.3f} | {lo:.3f}–{hi:.3f} | "
            f"{run['execution_rate']:.3f} | {run['effective_mmadds']:.2f} | {run['train_seconds']:.0f} s |"
        )
    lines += [
        "",
        (
            f"**Measured FLOPs ratio {g['flops_ratio']:.3f}; accuracy {g['accuracy']:.2%} vs "
            f"{a['accuracy']:.2%} with all groups on ({drop:+.2f} points lost).**"
        ),
        "",
        "Per stage, CDB run (test split):",
        "",
        g["stage_table"],
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
