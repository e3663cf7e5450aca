"""Names → model builders.

Every module of :mod:`dynzoo.models` registers its named models here when it is imported, and ``import dynzoo``
imports them all. The registry itself imports nothing above :mod:`dynzoo.weights`."""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras

from dynzoo.weights.manifest import get_weights, pretrained_tags


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., keras.Model]
    family: str
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    # figures to compare with (``dynzoo profile --compare``): official_params, official_madds_m,
    # paper_params_m, paper_madds_m, note
    reference: dict[str, Any] = field(default_factory=dict)

    @property
    def pretrained(self) -> dict[str, Any]:
        """Tag → manifest entry (source, sha256, preprocessing, input size, licence) of every pretrained
        weight file of this model, like timm's pretrained_cfg."""
        return {tag: get_weights(self.name, tag) for tag in pretrained_tags(self.name)}


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    builder: Callable[..., keras.Model],
    family: str,
    description: str = "",
    reference: dict[str, Any] | None = None,
    **defaults: Any,
) -> None:
    """Register ``builder`` under a stable lowercase ``name`` (``defaults`` are passed to it)."""
    if name != name.lower() or name in _REGISTRY:
        raise ValueError(f"model name {name!r} must be lowercase and unique.")
    _REGISTRY[name] = ModelEntry(name, builder, family, description, dict(defaults), dict(reference or {}))


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by a shell-style pattern (``"micronet_*"``)."""
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_entry(name: str) -> ModelEntry:
    if not isinstance(name, str) or name not in _REGISTRY:
        close = difflib.get_close_matches(str(name).lower(), list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} `dynzoo.list_models()` lists all {len(_REGISTRY)} models.")
    return _REGISTRY[name]


def create_model(model_name: str, /, **kwargs: Any) -> keras.Model:
    """Build the registered model ``model_name``; keyword arguments go to its keras.applications-style
    builder (``input_shape, include_top, weights, input_tensor, pooling, classes, classifier_activation,
    include_preprocessing, dropout_rate, name``: ``name`` is the Keras model's name)."""
    entry = get_entry(model_name)
    return entry.builder(**{**entry.defaults, **kwargs})


def load_model(path: str | os.PathLike, *, compile: bool = False, safe_mode: bool = True) -> keras.Model:
    """Load a ``.keras`` file (of a dynzoo model or any Keras model) with errors that say what is wrong.

    ``safe_mode=True`` (Keras' default, kept here) refuses files whose config carries Python code, such
    as a ``Lambda`` layer's function: nothing dynzoo saves needs one. dynzoo's layers and blocks are
    registered on ``import dynzoo``; plain ``keras.models.load_model`` works too once it is imported.

    Raises:
        ValueError: no such file, not a ``.keras`` archive (truncated or another format), a class the
            file needs that is not registered in this process, or Python code refused by safe mode.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"no such .keras file {path!r}.")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path!r} is not a .keras file (a zip archive): it is truncated or of another format.")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=safe_mode)
    except TypeError as e:
        missing = re.search(r"Could not locate class '([^']+)'", str(e))
        if not missing:
            raise
        module = re.search(r"'module': '([^']+)', 'class_name': '" + re.escape(missing[1]) + "'", str(e))
        where = f" (module {module[1]})" if module else ""
        raise ValueError(
            f"{path!r} needs the class {missing[1]}{where}, which is not registered in this process. "
            f"Importing dynzoo ({_version()}) registers dynzoo's classes and {missing[1]} is not one of them: "
            "the file was saved by another dynzoo version, or needs another package imported first."
        ) from None
    except ValueError as e:
        raise ValueError(f"{path!r}: {e}") from None
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise ValueError(f"{path!r} is not a readable .keras file ({type(e).__name__}: {e}).") from None


def _version() -> str:
    from dynzoo import __version__

    return __version__
