"""Reading the configurations that ship with the package (``zoo_configs/*.json``).

The bottom of dynzoo's layers: it imports nothing of dynzoo. ``zoo_configs/`` sits at the top of the
repository and is installed as the package ``dynzoo.zoo_configs`` (``setup.py``'s ``package_dir``), so one
lookup serves a plain install, an editable install and any working folder, the checkout's root included.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any


def config_dir() -> Traversable:
    """The folder of the configurations: ``dynzoo.zoo_configs``'s files, or ``zoo_configs/`` beside the package
    when ``dynzoo`` itself was imported from a source checkout (Python started in the repository's root finds
    the ``dynzoo/`` folder there before the installed package, and that folder has no ``zoo_configs``)."""
    try:
        return resources.files("dynzoo.zoo_configs")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "zoo_configs"


@cache
def load_config(name: str) -> dict[str, Any]:
    """The parsed ``zoo_configs/<name>.json`` (``micronet``, ``recipes``, ``weights``, …), read once.

    Raises:
        ValueError: no configuration of that name; the message lists those there are.
    """
    path = config_dir().joinpath(f"{name}.json")
    if not path.is_file():
        known = sorted(p.name[: -len(".json")] for p in config_dir().iterdir() if p.name.endswith(".json"))
        raise ValueError(f"no configuration {name!r} in zoo_configs/; there are {', '.join(known)}.")
    return json.loads(path.read_text(encoding="utf-8"))
