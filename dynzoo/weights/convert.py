"""Copy an official PyTorch state dict into a dynzoo Keras model, checking every key and shape.

Layers say where their weights live in the authors' code through ``official_children()`` (a list of
``(sub-module path, sub-layer)``); leaf Keras layers map by type with the PyTorch → channels-last layout rules.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import keras
import numpy as np

from dynzoo.weights.pth import load_pth, state_dict_from

Target = tuple[keras.Variable, Callable[[np.ndarray], np.ndarray]]


def _conv(w):  # (O, I/g, kh, kw) → (kh, kw, I/g, O)
    return w.transpose(2, 3, 1, 0)


def _same(w):
    return w


def _dense(w):  # (O, I) → (I, O)
    return w.T


def official_targets(layer: keras.layers.Layer, prefix: str) -> dict[str, Target]:
    """Every PyTorch key under ``prefix`` that ``layer`` owns, with its Keras variable and transform."""
    if hasattr(layer, "official_children"):
        targets: dict[str, Target] = {}
        for name, child in layer.official_children():
            targets.update(official_targets(child, f"{prefix}{name}."))
        return targets
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kernel = layer.kernel
        kh, kw, cin, mult = kernel.shape

        def depthwise(w, kh=kh, kw=kw, cin=cin, mult=mult):
            # (I·m, 1, kh, kw) → (kh, kw, I, m); output channel c·m + j in both frameworks
            return w.reshape(cin, mult, kh, kw).transpose(2, 3, 0, 1)

        out = {prefix + "weight": (kernel, depthwise)}
    elif isinstance(layer, keras.layers.Conv2D):
        out = {prefix + "weight": (layer.kernel, _conv)}
    elif isinstance(layer, keras.layers.Dense):
        out = {prefix + "weight": (layer.kernel, _dense)}
    elif isinstance(layer, keras.layers.BatchNormalization):
        return {
            prefix + "weight": (layer.gamma, _same),
            prefix + "bias": (layer.beta, _same),
            prefix + "running_mean": (layer.moving_mean, _same),
            prefix + "running_var": (layer.moving_variance, _same),
        }
    else:
        raise TypeError(f"no official weight mapping for {type(layer).__name__} at {prefix!r}")
    if getattr(layer, "use_bias", False):
        out[prefix + "bias"] = (layer.bias, _same)
    return out


def model_targets(pairs: Iterable[tuple[keras.layers.Layer, str]]) -> dict[str, Target]:
    targets: dict[str, Target] = {}
    for layer, prefix in pairs:
        targets.update(official_targets(layer, prefix))
    return targets


def assign_state_dict(
    targets: dict[str, Target],
    state_dict: dict[str, np.ndarray],
    *,
    source: str,
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    """Assign every target from ``state_dict``; on any missing/unexpected key or shape mismatch, raise
    one ValueError listing them all and assign nothing."""
    ignored = lambda k: k.endswith("num_batches_tracked") or k.startswith(ignore_prefixes)  # noqa: E731
    missing = sorted(k for k in targets if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in targets and not ignored(k))
    values, mismatched = {}, []
    for key, (variable, transform) in targets.items():
        if key in state_dict:
            value = state_dict[key]
            try:
                value = transform(np.asarray(value, dtype="float32"))
            except ValueError:
                pass
            if tuple(value.shape) != tuple(variable.shape):
                mismatched.append(f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(variable.shape)}")
            else:
                values[key] = value
    if missing or unexpected or mismatched:
        lines = [f"{source} does not match this model (is it a checkpoint of another architecture?):"]
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if items:
                shown = ", ".join(items[:12]) + (f", … ({len(items) - 12} more)" if len(items) > 12 else "")
                lines.append(f"  {len(items)} {title}: {shown}")
        raise ValueError("\n".join(lines))
    for key, (variable, _) in targets.items():
        variable.assign(values[key])


def load_official_checkpoint(
    path: str | os.PathLike,
    pairs: Iterable[tuple[keras.layers.Layer, str]],
    *,
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    """Read ``path`` safely (see :mod:`dynzoo.weights.pth`) and load it into the given layers."""
    state_dict = state_dict_from(load_pth(path))
    assign_state_dict(model_targets(pairs), state_dict, source=os.fspath(path), ignore_prefixes=ignore_prefixes)
