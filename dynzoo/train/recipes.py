"""Training recipes: the papers' and official scripts' hyper-parameters as named fields
(``zoo_configs/recipes.json``), resolved for a model and a dataset, every field overridable."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynzoo.config import load_config

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cos", "step", "exp")


@dataclass(frozen=True)
class Recipe:
    """One training recipe.

    Attributes:
        name: the recipe's name in ``recipes.json`` (or the file it came from).
        source: where the values come from ([code], [text], [chosen]).
        optimizer: ``sgd`` (momentum, optionally Nesterov) or ``adam`` (β1 = ``momentum``, β2 = ``beta_2``).
        momentum: SGD momentum or Adam's β1.
        nesterov: Nesterov momentum (SGD).
        beta_2: Adam's β2.
        lr: learning rate at the reference global batch ``batch_size``.
        batch_size: the reference global batch (the trainer's default batch).
        epochs: training epochs.
        schedule: ``cos`` (per iteration, to 0 after the warm-up), ``step`` (×``gamma`` at each of
            ``milestones``) or ``exp`` (×``gamma`` per epoch).
        warmup_epochs: linear warm-up from 0 (``lr·it/w``), per iteration.
        milestones: epochs at which ``step`` multiplies the rate by ``gamma``.
        gamma: the factor of ``step`` and ``exp``.
        weight_decay: coupled L2 on every trainable variable, BN and biases included (PyTorch SGD's
            ``weight_decay``: ``wd·w`` joins the gradient before momentum).
        label_smoothing: ε; the target gets 1−ε and every other class ε/(N−1) (the authors' loss).
        dropout: the model's dropout before the classifier; None keeps the model's default.
        mixup: mixup α (0: off); λ ~ Beta(α, α) per batch.
        mixup_ramp_epochs: α ramps linearly from 0 over these epochs (DCD: 100), then stays.
        input_size: square training and evaluation input size.
        crop_scale: (min, max) area fraction of the random resized crop.
        flip: random horizontal flip.
        crop_fraction: evaluation centre-crop fraction (0.875: resize 256 → crop 224); None: the
            dataset's default.
    """

    name: str = "custom"
    source: str = ""
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    beta_2: float = 0.999
    lr: float = 0.1
    batch_size: int = 256
    epochs: int = 100
    schedule: str = "cos"
    warmup_epochs: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    dropout: float | None = None
    mixup: float = 0.0
    mixup_ramp_epochs: int = 0
    input_size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip: bool = True
    crop_fraction: float | None = field(default=None)

    def __post_init__(self):
        for spec in dataclasses.fields(self):
            _check_type(spec.name, getattr(self, spec.name), spec.type)
        _check(self.optimizer in OPTIMIZERS, "optimizer", f"one of {list(OPTIMIZERS)}", self.optimizer)
        _check(self.schedule in SCHEDULES, "schedule", f"one of {list(SCHEDULES)}", self.schedule)
        _check(0 <= self.momentum < 1, "momentum", "in [0, 1)", self.momentum)
        _check(0 <= self.beta_2 < 1, "beta_2", "in [0, 1)", self.beta_2)
        _check(self.lr > 0, "lr", "> 0", self.lr)
        _check(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        _check(self.epochs >= 1, "epochs", ">= 1", self.epochs)
        _check(0 <= self.warmup_epochs < self.epochs, "warmup_epochs", "in [0, epochs)", self.warmup_epochs)
        _check(
            list(self.milestones) == sorted(self.milestones) and all(m > 0 for m in self.milestones),
            "milestones",
            "increasing positive epochs",
            self.milestones,
        )
        _check(0 < self.gamma <= 1, "gamma", "in (0, 1]", self.gamma)
        _check(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)
        _check(0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)", self.label_smoothing)
        _check(self.dropout is None or 0 <= self.dropout < 1, "dropout", "None or in [0, 1)", self.dropout)
        _check(self.mixup >= 0, "mixup", ">= 0", self.mixup)
        _check(self.mixup_ramp_epochs >= 0, "mixup_ramp_epochs", ">= 0", self.mixup_ramp_epochs)
        _check(self.input_size >= 32, "input_size", ">= 32", self.input_size)
        _check(
            len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
            "crop_scale",
            "(min, max) with 0 < min <= max <= 1",
            self.crop_scale,
        )
        _check(
            self.crop_fraction is None or 0 < self.crop_fraction <= 1,
            "crop_fraction",
            "None or in (0, 1]",
            self.crop_fraction,
        )

    def replace(self, **overrides: Any) -> Recipe:
        """A copy with ``overrides`` (None values are ignored: "not given"); unknown keys raise."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        _check_keys(overrides, "recipe override")
        return dataclasses.replace(self, **_coerce(overrides))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(ok: bool, key: str, allowed: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"recipe `{key}` must be {allowed}, got {value!r}.")


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return _is_integer(value) or isinstance(value, (float, np.floating))


# The field annotations (strings under `from __future__ import annotations`) → (test, what is allowed).
# Types are checked before ranges: JSON's "0.1", 1.5 epochs or "false" must not reach TensorFlow or
# count as true.
_TYPES = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "float": (_is_number, "a number"),
    "int": (_is_integer, "an integer"),
    "bool": (lambda v: isinstance(v, (bool, np.bool_)), "true or false (a JSON boolean, not a string)"),
    "float | None": (lambda v: v is None or _is_number(v), "a number or null"),
    "tuple[int, ...]": (lambda v: isinstance(v, tuple) and all(map(_is_integer, v)), "a list of integers"),
    "tuple[float, float]": (
        lambda v: isinstance(v, tuple) and len(v) == 2 and all(map(_is_number, v)),
        "a list of two numbers",
    ),
}


def _check_type(key: str, value: Any, annotation: str) -> None:
    test, allowed = _TYPES[annotation]
    if not test(value):
        shown = repr(list(value)) if isinstance(value, tuple) else f"{value!r} ({type(value).__name__})"
        raise ValueError(f"recipe `{key}` must be {allowed}, got {shown}.")


RECIPE_KEYS = tuple(f.name for f in dataclasses.fields(Recipe))


def _check_keys(values: Mapping[str, Any], where: str) -> None:
    unknown = [k for k in values if k not in RECIPE_KEYS]
    if unknown:
        hints = [
            f"{k!r} (did you mean {close[0]!r}?)"
            if (close := difflib.get_close_matches(k, RECIPE_KEYS, 1))
            else repr(k)
            for k in unknown
        ]
        raise ValueError(f"{where}: unknown recipe key(s) {', '.join(hints)}; the keys are {list(RECIPE_KEYS)}.")


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    """JSON lists → the tuples the dataclass holds."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def recipe_names() -> list[str]:
    return sorted(load_config("recipes")["recipes"])


def get_recipe(name: str) -> Recipe:
    """The recipe ``name`` of ``recipes.json``, or the recipe in the JSON file ``name``."""
    if name.endswith(".json") or os.path.sep in name:
        path = Path(name)
        try:
            values = json.loads(path.read_text())
        except OSError as e:
            raise ValueError(f"`recipe`: cannot read {name!r}: {e.strerror or e}.") from e
        except json.JSONDecodeError as e:
            raise ValueError(f"`recipe`: {name!r} is not valid JSON: {e}.") from e
        if not isinstance(values, dict):
            raise ValueError(f"`recipe`: {name!r} must hold one JSON object of recipe keys.")
        _check_keys(values, f"recipe file {name!r}")
        return _recipe_from(values, path.stem, f"recipe file {name!r}")
    recipes = load_config("recipes")["recipes"]
    if name not in recipes:
        close = difflib.get_close_matches(name, list(recipes), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown recipe {name!r}.{hint} The recipes are {sorted(recipes)}, or pass a JSON file.")
    _check_keys(recipes[name], f"recipe {name!r} in recipes.json")
    return _recipe_from(recipes[name], name, f"recipe {name!r} in recipes.json")


def _recipe_from(values: dict[str, Any], name: str, where: str) -> Recipe:
    try:
        return Recipe(**_coerce({"name": name, **values}))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def default_recipe_name(model: str, dataset: str) -> str:
    """The dataset's own recipe if it has one (digits), else the model's papers' recipe."""
    config = load_config("recipes")
    if dataset in config["dataset_recipes"]:
        return config["dataset_recipes"][dataset]
    for pattern, recipe in config["model_recipes"].items():
        if fnmatch.fnmatch(model, pattern):
            return recipe
    raise ValueError(f"no default recipe for model {model!r}; pass --recipe (one of {recipe_names()} or a JSON file).")
