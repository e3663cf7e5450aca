"""Parameters and MAdds per layer, counted the way the papers count them.

Parameters are the trainable weights (BatchNorm γ/β included, moving statistics excluded), which is
what ``sum(p.numel() for p in module.parameters())`` gives for the official PyTorch modules. MAdds
are those of :func:`dynzoo.layers.count_madds` for one sample: convolutions, dense layers (the
dynamic branches' FCs too) and each layer's own element-wise dynamic products (Dynamic Shift-Max:
2K per output element); pooling, BatchNorm and additions are not counted.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import keras
import numpy as np

from dynzoo.layers.base import count_madds
from dynzoo.models.cdb import analyze_gates, cdb_blocks, input_shape_of


@dataclass(frozen=True)
class LayerProfile:
    name: str
    kind: str
    output_shape: tuple
    params: int
    madds: int


@dataclass(frozen=True)
class Profile:
    model_name: str
    input_shape: tuple
    layers: tuple[LayerProfile, ...]

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def madds(self) -> int:
        return sum(layer.madds for layer in self.layers)

    def table(self) -> str:
        """A plain-text table, one row per layer, with the totals."""
        rows = [("layer", "type", "output", "params", "MAdds")]
        for layer in self.layers:
            shape = "×".join("?" if d is None else str(d) for d in layer.output_shape[1:])
            rows.append((layer.name, layer.kind, shape, f"{layer.params:,}", f"{layer.madds:,}"))
        rows.append(("total", "", "", f"{self.params:,}", f"{self.madds:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = []
        for i, row in enumerate(rows):
            cells = [c.ljust(w) if j < 3 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=False))]
            lines.append("  ".join(cells).rstrip())
            if i == 0 or i == len(rows) - 2:
                lines.append("  ".join("-" * w for w in widths))
        shape = "×".join(str(d) for d in self.input_shape[1:])
        return f"{self.model_name} at {shape}: {self.params:,} parameters, {self.madds / 1e6:.2f}M MAdds\n" + "\n".join(
            lines
        )

    def __str__(self) -> str:
        return self.table()


def trainable_params(layer: keras.layers.Layer) -> int:
    return sum(math.prod(w.shape) for w in layer.trainable_weights)


def profile(model: keras.Model, input_shape: tuple[int, int, int] | None = None) -> Profile:
    """Profile a functional ``model`` (every dynzoo model is one).

    Args:
        model: the model.
        input_shape: (H, W, C) to count MAdds at; default the model's own input shape, which must then
            be fully known.
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "_operations") or not model.inputs:
        raise ValueError("`model` must be a functional keras.Model (as built by dynzoo.create_model).")
    if input_shape is not None:
        model = _rebuild(model, input_shape)  # the counts do not depend on the weights
    shape = tuple(model.inputs[0].shape)
    if any(d is None for d in shape[1:]):
        raise ValueError(f"the model's input shape {shape} has unknown dimensions; pass `input_shape=(H, W, C)`.")
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        inputs = layer.input
        in_shape = [tuple(t.shape) for t in inputs] if isinstance(inputs, (list, tuple)) else tuple(inputs.shape)
        outputs = layer.output  # a layer with several outputs (DRNet cells: features, routing) shows the first
        out_shape = tuple((outputs[0] if isinstance(outputs, (list, tuple)) else outputs).shape)
        rows.append(
            LayerProfile(
                layer.name, type(layer).__name__, out_shape, trainable_params(layer), count_madds(layer, in_shape)
            )
        )
    return Profile(model.name, shape, tuple(rows))


def _rebuild(model: keras.Model, input_shape) -> keras.Model:
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"] = [None, *input_shape]
    return keras.Model.from_config(config)


def compare_table(profiles: list[Profile]) -> str:
    """Markdown table: our counts next to the official code's and the paper's (from the registry)."""
    from dynzoo.registry import get_entry

    def fmt(value, scale=1.0, digits=2):
        return "–" if value is None else f"{value / scale:.{digits}f}"

    lines = [
        "| model | params (ours) | params (official code) | params (paper) | MAdds (ours) | "
        "MAdds (official code) | MAdds (paper) | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in profiles:
        ref = get_entry(p.model_name).reference
        official = ref.get("official_params")
        lines.append(
            f"| {p.model_name} | {p.params:,} | {'–' if official is None else f'{official:,}'} | "
            f"{fmt(ref.get('paper_params_m'), 1, 1)}M | {p.madds / 1e6:.2f}M | "
            f"{fmt(ref.get('official_madds_m'))}M | {fmt(ref.get('paper_madds_m'), 1, 1)}M | {ref.get('note', '')} |"
        )
    return "\n".join(lines)


def effective_profile(model: keras.Model, images: np.ndarray, batch_size: int = 64) -> Profile:
    """:func:`profile`'s per-layer table of a CDB-ResNet with each CDB block's MAdds replaced by its mean
    effective MAdds on ``images`` (the gates the network executes)."""
    report = analyze_gates(model, images, batch_size)
    blocks = {b.name: i for i, b in enumerate(cdb_blocks(model))}
    base = profile(model)
    rows = []
    for row in base.layers:
        if row.name in blocks:
            i = blocks[row.name]
            block = model.get_layer(row.name)
            madds = (
                block.static_madds(input_shape_of(block)) + report.gates[:, i].sum(-1).mean() * report.costs.group[i]
            )
            row = dataclasses.replace(row, madds=round(madds))
        rows.append(row)
    return dataclasses.replace(base, layers=tuple(rows))
