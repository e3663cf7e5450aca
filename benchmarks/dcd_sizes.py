"""Parameters and MAdds of the DCD / DY-Conv / CondConv / static models against thesis Table 3.4 and
the official modules (mobilenetv2_dcd, resnet_dcd), at 224×224.

    python benchmarks/dcd_sizes.py        # writes benchmarks/results/dcd_sizes.md

MAdds follow the papers' convention (dynzoo.profile: convolutions and FCs; pooling, BN and additions
free; the dynamic layers' element-wise products counted). DY-Conv/CondConv are counted in the
``kernel`` formulation (aggregate the kernels, then one conv), the papers' convention; the
``branches`` formulation runs K convolutions and costs about K× more.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dynzoo

# (Table 3.4 row label, registered name) in the table's order; None: no model of that row here.
ROWS = [
    ("MBv2 ×1.0 static", "mobilenetv2_100"),
    ("MBv2 ×1.0 DY-Conv", "dy_mobilenetv2_100"),
    ("MBv2 ×1.0 CondConv", "condconv_mobilenetv2_100"),
    ("MBv2 ×1.0 DCD", "dcd_mobilenetv2_100"),
    ("MBv2 ×0.5 static", "mobilenetv2_050"),
    ("MBv2 ×0.5 DY-Conv", "dy_mobilenetv2_050"),
    ("MBv2 ×0.5 CondConv", "condconv_mobilenetv2_050"),
    ("MBv2 ×0.5 DCD", "dcd_mobilenetv2_050"),
    ("MBv2 ×0.35 static", "mobilenetv2_035"),
    ("MBv2 ×0.35 DY-Conv", "dy_mobilenetv2_035"),
    ("MBv2 ×0.35 DCD", "dcd_mobilenetv2_035"),
    ("ResNet-50 static", "resnet50"),
    ("ResNet-50 DCD", "dcd_resnet50"),
    ("ResNet-18 static", "resnet18"),
    ("ResNet-18 DY-Conv", None),
    ("ResNet-18 DCD", "dcd_resnet18"),
    ("ResNet-10 static", "resnet10"),
    ("ResNet-10 DY-Conv", None),
    ("ResNet-10 DCD", "dcd_resnet10"),
]
PAPER = {  # thesis Table 3.4: params (M), MAdds (M)
    "MBv2 ×1.0 static": (3.5, 300.0),
    "MBv2 ×1.0 DY-Conv": (11.1, 312.9),
    "MBv2 ×1.0 CondConv": (27.5, 329.0),
    "MBv2 ×1.0 DCD": (5.5, 326.0),
    "MBv2 ×0.5 static": (2.0, 97.0),
    "MBv2 ×0.5 DY-Conv": (4.0, 101.4),
    "MBv2 ×0.5 CondConv": (15.5, 113.0),
    "MBv2 ×0.5 DCD": (3.1, 104.8),
    "MBv2 ×0.35 static": (1.7, 59.2),
    "MBv2 ×0.35 DY-Conv": (2.8, 62.0),
    "MBv2 ×0.35 DCD": (2.3, 63.1),
    "ResNet-50 static": (23.5, 3800),
    "ResNet-50 DCD": (30.7, 3900),
    "ResNet-18 static": (11.1, 1810),
    "ResNet-18 DY-Conv": (42.7, 1850),
    "ResNet-18 DCD": (14.0, 1830),
    "ResNet-10 static": (5.2, 890),
    "ResNet-10 DY-Conv": (18.6, 910),
    "ResNet-10 DCD": (6.5, 900),
}


def main(out: str = str(Path(__file__).parent / "results" / "dcd_sizes.md")) -> int:
    lines = [
        "# Table 3.4 models: ours vs the paper (224×224)",
        "",
        (
            "Command: `python benchmarks/dcd_sizes.py` · params = trainable weights (BN γ/β included, moving "
            "statistics not) · MAdds by `dynzoo.profile`; DY-Conv/CondConv in the `kernel` formulation "
            "(the `branches` one in the last column)."
        ),
        "",
        "| Table 3.4 row | model | params (M) | paper params (M) | official module params | MAdds (M) | paper MAdds (M) | MAdds, branches (M) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, name in ROWS:
        paper_params, paper_madds = PAPER[label]
        if name is None:
            lines.append(f"| {label} | not built | | {paper_params} | | | {paper_madds} | |")
            continue
        print(f"profiling {name}", file=sys.stderr, flush=True)
        kwargs = {"formulation": "kernel"} if name.startswith(("dy_", "condconv_")) else {}
        prof = dynzoo.profile(dynzoo.create_model(name, **kwargs))
        branches = ""
        if kwargs:
            branches = f"{dynzoo.profile(dynzoo.create_model(name, formulation='branches')).madds / 1e6:.1f}"
        official = dynzoo.registry.get_entry(name).reference.get("official_params")
        lines.append(
            f"| {label} | `{name}` | {prof.params / 1e6:.2f} | {paper_params} | "
            f"{f'{official:,}' if official else ''} | {prof.madds / 1e6:.1f} | {paper_madds} | {branches} |"
        )
    text = "\n".join(lines) + "\n"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
