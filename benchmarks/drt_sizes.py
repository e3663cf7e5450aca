"""Parameters and MAdds of the DRT networks next to their static counterparts (dynzoo's profiler, the
papers' MAdds convention; 224×224 for the ResNets, 32×32 for the LeNets).

    python benchmarks/drt_sizes.py
writes benchmarks/results/drt_sizes.md. The official DRT ResNet-101 backbone has 54,103,824 parameters
(the code's BottleneckKDRA); the dynamic residual runs four 1×1 convs per bottleneck, as the authors' code does.
"""

from __future__ import annotations

from pathlib import Path

import dynzoo
from dynzoo.profile import profile, trainable_params

RESULTS = Path(__file__).parent / "results"
PAIRS = [
    ("drt_lenet", "drt_lenet_static", (32, 32, 3), 10),
    ("drt_resnet50", "resnet50", (224, 224, 3), 1000),
    ("drt_resnet101", None, (224, 224, 3), 1000),
]


def main() -> None:
    lines = [
        "# DRT network sizes",
        "",
        "`python benchmarks/drt_sizes.py`",
        "",
        "| model | input | trainable params | backbone params (no classifier) | MAdds (M) | static counterpart | its MAdds (M) | MAdds overhead |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, static, shape, classes in PAIRS:
        model = dynzoo.create_model(name, input_shape=shape, classes=classes)
        backbone = dynzoo.create_model(name, input_shape=shape, include_top=False)
        madds = profile(model).madds
        row = [
            name,
            f"{shape[0]}×{shape[1]}",
            f"{sum(trainable_params(layer) for layer in model.layers):,}",
            f"{sum(trainable_params(layer) for layer in backbone.layers):,}",
            f"{madds / 1e6:.1f}",
        ]
        if static:
            static_madds = profile(dynzoo.create_model(static, input_shape=shape, classes=classes)).madds
            row += [static, f"{static_madds / 1e6:.1f}", f"{100 * (madds / static_madds - 1):+.1f}%"]
        else:
            row += ["–", "–", "–"]
        lines.append("| " + " | ".join(row) + " |")
        print(lines[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "drt_sizes.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
