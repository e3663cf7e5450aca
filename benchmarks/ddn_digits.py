"""DDN on the offline multi-domain digits (paper Tables 1 and 6, classification proxy).

Trains, with the same domain-sampled batches (Algorithm 1) and recipe, the static MobileNetV2 ×0.35 and
DDN 2x / 4x of the same inference size; builds the model pool (the static model fine-tuned on each
domain); evaluates every model on each domain's test split; runs the domain shuffle; draws the mixing
factors (Fig. 5). 32×32 inputs, 9 domains {day, dusk, night} × {clear, fog, rain}; every training image in
every domain, or (``--dataset digits_domains_disjoint``) each in one.

    python benchmarks/ddn_digits.py [--dataset digits_domains] [--epochs 6] [--pool-epochs 3] [--lr 0.05] [--runs DIR]
                                    [--embedding-scale 1] [--models static ddn_2x ddn_4x] [--output STEM]
                                    [--seed 0]

Writes benchmarks/results/ddn_digits.{json,md} and benchmarks/results/ddn_mixing_factors.png (with
--output STEM: STEM.{json,md} and STEM_mixing_factors.png). The model pool needs ``static`` in --models.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dynzoo.cli import hyphenate_flags

HERE = Path(__file__).resolve().parent
MODELS = {"static": "mobilenetv2_035", "ddn_2x": "ddn_mobilenetv2_035_2x", "ddn_4x": "ddn_mobilenetv2_035_4x"}


def train_all(dataset: str, epochs: int, lr: float, runs: Path, models, embedding_scale: float, seed: int) -> dict:
    from dynzoo.train.domains import train_domains
    from dynzoo.train.trainer import TrainConfig

    results = {}
    for key in models:
        options = {"bn_reestimate": True, **({"embedding_scale": embedding_scale} if key != "static" else {})}
        config = TrainConfig(
            model=MODELS[key],
            dataset=dataset,
            model_dir=str(runs / key),
            overrides={"epochs": epochs, "lr": lr},
            verbose=2,
            options=options,
            seed=seed,
        )
        results[key] = train_domains(config)
    return results


def model_pool(dataset: str, static_dir: Path, epochs: int, lr: float, seed: int) -> dict[str, float]:
    """The static model fine-tuned on each domain alone (paper: initialised from the global model), on the
    domains of ``seed`` (the seed also draws the photometric transforms)."""
    import keras

    from dynzoo.train.domains import DomainData, domain_dataset, load_domains, predict_domain, steps_per_epoch

    train, test = (load_domains(dataset, s, 32, seed=seed) for s in ("train", "test"))
    accuracy = {}
    for domain in train.domains:
        keras.utils.set_random_seed(seed)
        model = keras.saving.load_model(static_dir / "model.keras", compile=False)
        one = DomainData({domain: train.images[domain]}, {domain: train.labels[domain]}, train.class_names)
        steps = steps_per_epoch(one, 64)
        schedule = keras.optimizers.schedules.CosineDecay(lr, epochs * steps)
        model.compile(
            optimizer=keras.optimizers.SGD(schedule, momentum=0.9),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        )
        model.fit(domain_dataset(one, None, 64, seed=seed + 1), epochs=epochs, steps_per_epoch=steps, verbose=0)
        accuracy[domain] = float(
            np.mean(predict_domain(model, test.images[domain], None).argmax(-1) == test.labels[domain])
        )
        print(f"model pool: {domain} {100 * accuracy[domain]:.2f}%", flush=True)
    return accuracy


def markdown(report: dict) -> str:
    rows = report["table1"]
    domains = list(rows[0]["per_domain"])
    lines = [
        f"# DDN on the offline multi-domain digits ({report['setting']})",
        "",
        "Mean test top-1 over the 9 domains (each domain's test split; DDN fed the domain's test-split "
        "embedding). 'BN re-est.': the per-domain deployed network (DDN baked for the domain; static as "
        "is) with BatchNorm statistics re-estimated on the domain's training images.",
        "",
        "| model | total params | inference params | mean top-1 | mean top-1, BN re-est. |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        bn = f"{100 * r['mean_bn']:.2f}%" if r.get("mean_bn") is not None else "n/a"
        lines.append(
            f"| {r['model']} | {r['total_params']:,} | {r['inference_params']:,} | {100 * r['mean']:.2f}% | {bn} |"
        )
    lines += [
        "",
        "Per domain (top-1 %, shared BatchNorm statistics; model pool: fine-tuned per domain):",
        "",
        "| model | " + " | ".join(domains) + " |",
        "|---|" + "---|" * len(domains),
    ]
    for r in rows:
        lines.append(f"| {r['model']} | " + " | ".join(f"{100 * r['per_domain'][d]:.1f}" for d in domains) + " |")
    permutations = next(iter(report["shuffle"].values()))["permutations"] if report["shuffle"] else 0
    lines += [
        "",
        "Domain shuffle (paper Table 6): mean top-1 with the right embeddings and with the embeddings "
        f"of other domains ({permutations} random derangements).",
        "",
        "| model | normal | shuffled worst | shuffled average |",
        "|---|---|---|---|",
    ]
    for key, s in report["shuffle"].items():
        lines.append(
            f"| {key} | {100 * s['normal']:.2f}% | {100 * s['shuffled_worst']:.2f}% | "
            f"{100 * s['shuffled_average']:.2f}% |"
        )
    lines += ["", f"Training time: {report['seconds']} s in total. Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    from dynzoo.train.domains import DIGIT_DATASETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset",
        choices=DIGIT_DATASETS,
        default="digits_domains",
        help="every training image in every domain (default), or each in one domain only",
    )
    parser.add_argument("--epochs", type=int, default=6, help="epochs of each model (default 6)")
    parser.add_argument(
        "--lr",
        type=float,
        default=0.05,
        help="peak learning rate of every model (default 0.05; the digits recipe's 0.1 diverges "
        "with single-domain batches)",
    )
    parser.add_argument("--pool-epochs", type=int, default=3, help="fine-tuning epochs per pool member")
    parser.add_argument("--pool-lr", type=float, default=0.01, help="fine-tuning learning rate of the pool")
    parser.add_argument(
        "--runs",
        default=str(Path(tempfile.gettempdir()) / "dynzoo_ddn_digits"),
        help="folder for the trained models (default: in the temporary folder)",
    )
    parser.add_argument(
        "--embedding-scale",
        type=float,
        default=1.0,
        help="norm of the standardised domain embeddings of the DDN models (default 1)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=list(MODELS),
        default=list(MODELS),
        help="models to train (default all; the model pool needs static)",
    )
    parser.add_argument("--output", default=str(HERE / "results" / "ddn_digits"), help="output stem")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the weights, the batches and the domains' photometric transforms (default 0)",
    )
    args = parser.parse_args(hyphenate_flags(sys.argv[1:] if argv is None else argv))
    started = time.perf_counter()
    runs = Path(args.runs)
    results = train_all(args.dataset, args.epochs, args.lr, runs, args.models, args.embedding_scale, args.seed)
    pool = (
        model_pool(args.dataset, runs / "static", args.pool_epochs, args.pool_lr, args.seed)
        if "static" in results
        else None
    )

    import keras

    from dynzoo.layers.domain import DomainEmbeddings
    from dynzoo.models.bake import bake_domain

    rows = []
    for key, result in results.items():
        s = result.summary
        inference = s["params"]
        if key != "static":
            embeddings = DomainEmbeddings.load(runs / key / "domain_embeddings.json")
            inference = bake_domain(result.model, embeddings[embeddings.domains[0]]).count_params()
        rows.append(
            {
                "model": f"{key} ({s['model']})",
                "total_params": s["params"],
                "inference_params": inference,
                "mean": s["test_top1"],
                "mean_bn": s.get("test_top1_bn_reestimated"),
                "per_domain": s["test_top1_per_domain"],
                "per_domain_bn": s.get("test_top1_per_domain_bn_reestimated"),
            }
        )
    if pool is not None:
        static_params = results["static"].summary["params"]
        rows.insert(
            1,
            {
                "model": "model pool (static fine-tuned per domain)",
                "total_params": static_params * len(pool),
                "inference_params": static_params,
                "mean": float(np.mean(list(pool.values()))),
                "mean_bn": None,
                "per_domain": pool,
            },
        )
    report = {
        "setting": f"{args.dataset}, MobileNetV2 x0.35, 32x32, {args.epochs} epochs, digits recipe at peak lr {args.lr}; pool {args.pool_epochs} "
        f"epochs at lr {args.pool_lr}; DDN embedding scale {args.embedding_scale:g}; seed {args.seed}",
        "command": "python benchmarks/ddn_digits.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "table1": rows,
        "shuffle": {k: r.summary["domain_shuffle"] for k, r in results.items() if "domain_shuffle" in r.summary},
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    keras.backend.clear_session()
    if "ddn_2x" in results:
        png = "ddn_mixing_factors.png" if out.name == "ddn_digits" else f"{out.name}_mixing_factors.png"
        subprocess.run(
            [
                sys.executable,
                os.fspath(HERE / "ddn_mixing_factors.py"),
                os.fspath(runs / "ddn_2x" / "model.keras"),
                os.fspath(runs / "ddn_2x" / "domain_embeddings_test.json"),
                "--output",
                os.fspath(out.parent / png),
            ],
            check=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
