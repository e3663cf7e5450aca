"""Parameters and MAdds of the CDB-ResNets against the paper (Table 2 / Table 4) and the spec's recount.

Counted by ``dynzoo.profile`` (trainable weights, BN γ/β included; MAdds of one sample with every group
on) and split into controllers and the rest; the paper's GFLOPs are those of the gated networks at a target
rate r, so they are shown with that rate's all-on fraction for reference.

    python benchmarks/cdb_sizes.py            # writes benchmarks/results/cdb_sizes.md
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MODELS = ("cdb_resnet50", "cdb_resnet50_n3", "cdb_resnet50_n4", "cdb_resnet101", "cdb_resnet18", "cdb_resnet50_cifar")


def main():
    import dynzoo
    from dynzoo.models.cdb import cdb_blocks, gate_costs
    from dynzoo.profile import profile

    lines = [
        "# CDB-ResNet sizes — `python benchmarks/cdb_sizes.py`",
        "",
        (
            "| model | N | params (M) | of which controllers (M) | paper params (M) | ours vs paper | "
            "all-on MAdds (G) | stage-1 group width | static MAdds (G) |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        model = dynzoo.create_model(name)
        p = profile(model)
        blocks = cdb_blocks(model)
        controllers = sum(int(np.prod(w.shape)) for b in blocks for w in b.controller.trainable_weights)
        costs = gate_costs(model)
        ref = dynzoo.registry.get_entry(name).reference
        paper = ref.get("paper_params_m")
        delta = f"{100 * (p.params / 1e6 - paper) / paper:+.2f}%" if paper else "–"
        lines.append(
            f"| {name} | {blocks[0].groups} | {p.params / 1e6:.3f} | {controllers / 1e6:.3f} | "
            f"{paper if paper else '–'} | {delta} | {p.madds / 1e9:.3f} | {blocks[0].width} | "
            f"{costs.static / 1e9:.3f} |"
        )
        print(lines[-1], flush=True)
    resnet = profile(dynzoo.create_model("resnet50"))
    lines += [
        "",
        (
            f"ResNet-50 (same counter): {resnet.params / 1e6:.3f} M parameters, {resnet.madds / 1e9:.3f} GMAdds "
            "(the paper's baseline: 25.56 M, 3.96 GFLOPs)."
        ),
    ]
    out = Path(__file__).parent / "results" / "cdb_sizes.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
