"""Parameters and MAdds of the DDW networks and their static baselines at 224×224, next to the paper's Table 1.

Static baseline: the registered static network (``resnet18``, ``resnet50``, ``mobilenetv2_100``) and the DDW
builder's ``wiring="chain"`` (the same blocks in sequence: the only ResNet-101 of the zoo); the two must agree.
Overheads: DDW minus its chain — router parameters (FC + bias per node) and thresholds τ; router MAdds and one
multiply per element and edge of the weighted sums (additions free). The static-α ablation's counts too.

    python benchmarks/ddw_sizes.py      # writes benchmarks/results/ddw_sizes.{md,json}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MODELS = ("ddw_resnet18", "ddw_resnet50", "ddw_resnet101", "ddw_mobilenetv2_100")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--output", default=str(Path(__file__).parent / "results" / "ddw_sizes"))
    return p.parse_args()


def main():
    args = parse_args()
    import keras
    from tqdm import tqdm

    import dynzoo
    from dynzoo.models.ddw import ddw_config, wired_stages
    from dynzoo.profile import profile

    rows = []
    for name in tqdm(args.models, desc="models"):
        cfg, _ = ddw_config(name)
        counts = {}
        for wiring in ("dynamic", "static", "chain"):
            model = dynzoo.create_model(name, wiring=wiring)
            p = profile(model)
            counts[wiring] = {"params": p.params, "madds": p.madds}
            if wiring == "dynamic":
                graphs = [(s.name, len(s.blocks) + 1, s.edge_count()) for s in wired_stages(model)]
            keras.backend.clear_session()
        if cfg["static_model"]:
            p = profile(dynzoo.create_model(cfg["static_model"]))
            counts["registered_static"] = {"params": p.params, "madds": p.madds}
            keras.backend.clear_session()
        rows.append({"model": name, "graphs": graphs, "counts": counts, "reference": cfg["reference"]})

    lines = [
        "# DDW sizes at 224×224 next to the paper's Table 1",
        "",
        "Produced by `python benchmarks/ddw_sizes.py`. Params in millions, MAdds (= the paper's FLOPs) in "
        "millions; Δ = DDW − static. Static = the builder's chain wiring (equal to the registered static "
        "network where one exists: column 'registered').",
        "",
        "| model | graphs (nodes/edges) | static params | registered | DDW params | Δ params (ours) | "
        "Δ params (paper) | static MAdds | DDW MAdds | Δ MAdds (ours) | Δ MFLOPs (paper) | static-α Δ params | "
        "static-α Δ MAdds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        c, ref = row["counts"], row["reference"]
        base, ddw, alpha = c["chain"], c["dynamic"], c["static"]
        registered = c.get("registered_static")
        reg = (
            "–"
            if registered is None
            else (
                "equal" if registered == base else f"{registered['params'] / 1e6:.3f} / {registered['madds'] / 1e6:.1f}"
            )
        )
        graphs = ", ".join(f"{n}/{e}" for _, n, e in row["graphs"])
        lines.append(
            f"| {row['model']} | {graphs} | {base['params'] / 1e6:.3f} ({ref['base_params_m']}) | {reg} | "
            f"{ddw['params'] / 1e6:.3f} ({ref['paper_params_m']}) | +{(ddw['params'] - base['params']) / 1e6:.4f} | "
            f"+{ref['paper_params_m'] - ref['base_params_m']:.2f} | {base['madds'] / 1e6:.1f} ({ref['base_madds_m']}) | "
            f"{ddw['madds'] / 1e6:.1f} ({ref['paper_madds_m']}) | +{(ddw['madds'] - base['madds']) / 1e6:.2f} | "
            f"+{ref['paper_madds_m'] - ref['base_madds_m']} | +{(alpha['params'] - base['params']) / 1e6:.5f} | "
            f"+{(alpha['madds'] - base['madds']) / 1e6:.2f} |"
        )
    lines += ["", "Paper figures in parentheses (Table 1: retrained baselines and DDW)."]
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
