"""The weight manifest: which pretrained weights exist, where they come from and how to use them.

The package ships ``zoo_configs/weights.json``; a user manifest, ``$DYNZOO_HOME/weights.json`` (same
layout), is merged over it field by field. It holds the hashes a user pins (``dynzoo weights pin``) and
the weights a user publishes (``dynzoo weights publish``).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynzoo.config import load_config
from dynzoo.weights.download import dynzoo_home

FORMATS = ("pytorch_official", "keras_weights_h5")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class WeightEntry:
    """One pretrained-weights file of a model (the manifest's fields, shared ones resolved)."""

    model: str
    tag: str
    format: str
    file_name: str | None
    urls: tuple[str, ...]
    sha256: str | None
    size: int | None
    input_size: tuple[int, int, int]
    num_classes: int | None
    preprocessing: dict[str, Any] | None = None
    top1: float | None = None
    top5: float | None = None
    metrics_source: str | None = None
    origin_url: str | None = None
    licence: str | None = None
    citation: str | None = None
    manual_download: dict[str, str] | None = None
    notes: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.model}:{self.tag}"


def user_manifest_path() -> Path:
    return dynzoo_home() / "weights.json"


def _package_manifest() -> dict[str, Any]:
    return load_config("weights")


def _read_user_manifest(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"weights": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read the user weight manifest {path}: {e}") from None
    if not isinstance(data.get("weights", {}), dict):
        raise ValueError(f"{path}: 'weights' must map model names to {{tag: entry}}.")
    data.setdefault("weights", {})
    return data


def _merged() -> dict[str, Any]:
    package = _package_manifest()
    user = _read_user_manifest(user_manifest_path())
    weights = {model: {tag: dict(fields) for tag, fields in tags.items()} for model, tags in package["weights"].items()}
    for model, tags in user["weights"].items():
        for tag, fields in tags.items():
            weights.setdefault(model, {}).setdefault(tag, {}).update(fields)
    return {
        "sources": {**package.get("sources", {}), **user.get("sources", {})},
        "preprocessing": {**package.get("preprocessing", {}), **user.get("preprocessing", {})},
        "weights": weights,
    }


def _entry(model: str, tag: str, fields: dict[str, Any], manifest: dict[str, Any]) -> WeightEntry:
    where = f"weight manifest entry {model}:{tag}"
    source = manifest["sources"].get(fields.get("source"), {}) if fields.get("source") else {}
    fields = {**source, **fields}
    if fields.get("format") not in FORMATS:
        raise ValueError(f"{where}: 'format' must be one of {list(FORMATS)}, got {fields.get('format')!r}.")
    sha256 = fields.get("sha256")
    if sha256 is not None and not _SHA256.match(str(sha256)):
        raise ValueError(f"{where}: 'sha256' must be 64 lowercase hex digits or null, got {sha256!r}.")
    preprocessing = fields.get("preprocessing")
    if isinstance(preprocessing, str):
        if preprocessing not in manifest["preprocessing"]:
            raise ValueError(f"{where}: unknown preprocessing {preprocessing!r}.")
        preprocessing = {"name": preprocessing, **manifest["preprocessing"][preprocessing]}
    known = {f for f in WeightEntry.__dataclass_fields__} | {"source"}
    return WeightEntry(
        model=model,
        tag=tag,
        format=fields["format"],
        file_name=fields.get("file_name"),
        urls=tuple(fields.get("urls") or ()),
        sha256=sha256,
        size=fields.get("size"),
        input_size=tuple(fields.get("input_size") or (224, 224, 3)),
        num_classes=fields.get("num_classes"),
        preprocessing=preprocessing,
        top1=fields.get("top1"),
        top5=fields.get("top5"),
        metrics_source=fields.get("metrics_source"),
        origin_url=fields.get("origin_url"),
        licence=fields.get("licence"),
        citation=fields.get("citation"),
        manual_download=fields.get("manual_download"),
        notes=fields.get("notes"),
        extra={k: v for k, v in fields.items() if k not in known},
    )


def list_weights(pattern: str | None = None) -> list[WeightEntry]:
    """Every manifest entry (package and user), sorted by model then tag; ``pattern`` filters models
    shell-style (``"micronet_*"``)."""
    manifest = _merged()
    return [
        _entry(model, tag, fields, manifest)
        for model, tags in sorted(manifest["weights"].items())
        if pattern is None or fnmatch.fnmatch(model, pattern)
        for tag, fields in sorted(tags.items())
    ]


def pretrained_tags(model: str) -> list[str]:
    """The weight tags known for ``model`` (e.g. ``["imagenet"]``)."""
    return sorted(_merged()["weights"].get(model, {}))


def get_weights(model: str, tag: str = "imagenet") -> WeightEntry:
    """The manifest entry ``model:tag``; a ValueError names what exists instead."""
    manifest = _merged()
    tags = manifest["weights"].get(model)
    if not tags:
        known = ", ".join(sorted(manifest["weights"]))
        raise ValueError(f"no pretrained weights are listed for {model!r}; models with weights: {known}.")
    if tag not in tags:
        raise ValueError(f"{model!r} has no weights tagged {tag!r}; available tags: {sorted(tags)}.")
    return _entry(model, tag, tags[tag], manifest)


def parse_name(name: str) -> tuple[str, str]:
    """``"micronet_m0:imagenet"`` → ``("micronet_m0", "imagenet")``; the tag defaults to imagenet."""
    model, _, tag = name.partition(":")
    if not model:
        raise ValueError(f"expected NAME[:TAG] (e.g. micronet_m0:imagenet), got {name!r}.")
    return model, tag or "imagenet"


def update_manifest(path: str | os.PathLike, model: str, tag: str, fields: dict[str, Any]) -> Path:
    """Merge ``fields`` into the entry ``model:tag`` of the manifest file ``path`` (created if needed),
    written atomically. Returns the path."""
    path = Path(path)
    data = _read_user_manifest(path)
    data["weights"].setdefault(model, {}).setdefault(tag, {}).update(fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
