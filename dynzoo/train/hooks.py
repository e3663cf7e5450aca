"""Family-specific training: extra losses, schedules and logging that a model family adds to ``dynzoo train``.

A family registers one hook in its module of :mod:`dynzoo.train.families` (all imported with
:mod:`dynzoo.train`)::

    register_training_hook("drnet", {"resource_weight": (float, "weight R of the resource loss")}, prepare)

``dynzoo train`` then has a ``--resource-weight`` flag; the options a run gives reach ``prepare(network,
options, context)``, which returns the :class:`TrainingSetup` that ``fit`` uses. Every model of the family
goes through its hook, with an empty ``options`` dict when no option is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TrainingContext:
    """What a hook may need to know about the run.

    Attributes:
        epochs: training epochs.
        steps_per_epoch: iterations per epoch.
        sample_images: up to 256 test images as the network receives them (float32 in [0, 255], the
            training size), for logging callbacks.
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.
    """

    epochs: int
    steps_per_epoch: int
    sample_images: np.ndarray
    verbose: int = 1


@dataclass
class TrainingSetup:
    """How a family trains.

    Attributes:
        model: what ``fit`` trains: the network, or a ``keras.Model`` wrapper whose ``compute_loss`` adds the
            family's losses.
        network: what is evaluated, saved as ``model.keras`` and exported.
        callbacks: added to ``fit`` (schedules, logging).
        report: ``report(network) -> dict`` of extra figures for ``summary.json``; None: nothing extra.
    """

    model: Any
    network: Any
    callbacks: list = field(default_factory=list)
    report: Callable[[Any], dict[str, Any]] | None = None


Prepare = Callable[[Any, dict[str, Any], TrainingContext], TrainingSetup]


@dataclass(frozen=True)
class TrainingHook:
    family: str
    options: dict[str, tuple[type, str]]
    prepare: Prepare


_HOOKS: dict[str, TrainingHook] = {}
OPTION_TYPES = (float, int, str, bool)


def register_training_hook(family: str, options: dict[str, tuple[type, str]], prepare: Prepare) -> None:
    """Register how models of ``family`` train. ``options`` maps a flag name to ``(type, help)``; ``type``
    is one of float, int, str, bool. A name two families share must have the same type."""
    if family in _HOOKS:
        raise ValueError(f"family {family!r} already has a training hook.")
    for name, (kind, _) in options.items():
        if kind not in OPTION_TYPES:
            raise ValueError(f"option {name!r}: type must be one of float, int, str, bool, got {kind!r}.")
        for other in _HOOKS.values():
            if name in other.options and other.options[name][0] is not kind:
                raise ValueError(
                    f"option {name!r} is a {other.options[name][0].__name__} for family "
                    f"{other.family!r}; {family!r} declares it as {kind.__name__}."
                )
    _HOOKS[family] = TrainingHook(family, dict(options), prepare)


def training_options() -> dict[str, tuple[type, str, list[str]]]:
    """Every registered option: name → (type, help, families that take it)."""
    merged: dict[str, tuple[type, str, list[str]]] = {}
    for hook in _HOOKS.values():
        for name, (kind, text) in hook.options.items():
            merged.setdefault(name, (kind, text, []))[2].append(hook.family)
    return merged


def check_options(family: str, options: dict[str, Any]) -> None:
    """Refuse options that ``family``'s hook does not take, naming the families that do."""
    known = training_options()
    accepted = _HOOKS[family].options if family in _HOOKS else {}
    for name in options:
        if name not in accepted:
            takers = known[name][2] if name in known else []
            where = (
                f"only to models of the {', '.join(takers)} famil{'y' if len(takers) == 1 else 'ies'}"
                if takers
                else "to no model family"
            )
            raise ValueError(f"training option `{name}` applies {where}; this model is of the {family!r} family.")


def prepare_training(family: str, network, options: dict[str, Any], context: TrainingContext) -> TrainingSetup:
    """The family's :class:`TrainingSetup` for ``network``; a family without a hook trains it as it is."""
    check_options(family, options)
    if family not in _HOOKS:
        return TrainingSetup(model=network, network=network)
    return _HOOKS[family].prepare(network, dict(options), context)
