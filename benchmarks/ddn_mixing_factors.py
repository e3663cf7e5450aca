"""The mixing factors of a trained DDN per domain (a figure like the paper's Fig. 5).

    python benchmarks/ddn_mixing_factors.py MODEL.keras EMBEDDINGS.json [--domains d1 d2 …] [--output F.png]

For each domain, every domain-aware layer's α (K values) is concatenated in model order into one factor
vector (the paper's Fig. 5 concatenates "weight factors of all layers"); the vectors are drawn as
curves, one panel per domain, and their pairwise correlations are written next to the figure
(``<output>.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

DEFAULT_DOMAINS = ("day_clear", "night_clear", "day_rain", "night_rain")


def factor_vectors(model, embeddings, domains) -> dict[str, np.ndarray]:
    from dynzoo.layers.domain import mixing_factor_table

    return {d: np.concatenate(list(mixing_factor_table(model, embeddings[d]).values())) for d in domains}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a trained DDN .keras file")
    parser.add_argument("embeddings", help="DomainEmbeddings JSON (domain_embeddings_test.json of the run)")
    parser.add_argument("--domains", nargs="+", default=None, help=f"domains to draw (default {DEFAULT_DOMAINS})")
    parser.add_argument("--output", default="ddn_mixing_factors.png")
    args = parser.parse_args(argv)

    import keras
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import dynzoo.models  # noqa: F401  (registers the DDN blocks for loading)
    from dynzoo.layers.domain import DomainEmbeddings

    model = keras.saving.load_model(args.model, compile=False)
    embeddings = DomainEmbeddings.load(args.embeddings)
    domains = args.domains or [d for d in DEFAULT_DOMAINS if d in embeddings.domains] or embeddings.domains[:4]
    vectors = factor_vectors(model, embeddings, domains)
    fig, axes = plt.subplots(len(domains), 1, figsize=(10, 1.6 * len(domains)), sharex=True, sharey=True)
    for ax, (domain, v) in zip(np.atleast_1d(axes), vectors.items(), strict=False):
        ax.plot(v, lw=0.8)
        ax.set_ylabel(domain, rotation=0, ha="right", va="center")
        ax.set_ylim(0, 1)
    np.atleast_1d(axes)[-1].set_xlabel("mixing factor index (layers in model order × experts)")
    fig.suptitle(f"DDN mixing factors per domain ({model.name})")
    fig.tight_layout()
    out = Path(args.output)
    fig.savefig(out, dpi=120)
    names = list(vectors)
    corr = np.corrcoef(np.stack([vectors[d] for d in names]))
    deviation = np.stack([vectors[d] - np.mean(list(vectors.values()), axis=0) for d in names])
    dev_corr = np.corrcoef(deviation)
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "model": Path(args.model).name,
                "domains": names,
                "factors": {d: v.round(5).tolist() for d, v in vectors.items()},
                "correlation": corr.round(4).tolist(),
                "correlation_of_deviations_from_mean": dev_corr.round(4).tolist(),
            },
            indent=1,
        )
    )
    print(f"wrote {out} and {out.with_suffix('.json')}")
    for i, d in enumerate(names):
        print(d, " ".join(f"{c:+.3f}" for c in dev_corr[i]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
