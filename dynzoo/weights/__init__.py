"""Weights: a safe reader for PyTorch checkpoints, converters into dynzoo models, the weight manifest
and verified, cached downloads of pretrained files."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from dynzoo.weights.convert import assign_state_dict, load_official_checkpoint, official_targets
from dynzoo.weights.download import (
    DownloadError,
    HashMismatchError,
    cache_dir,
    fetch,
    file_lock,
    sha256_file,
)
from dynzoo.weights.manifest import WeightEntry, get_weights, list_weights, pretrained_tags
from dynzoo.weights.pth import CheckpointError, UnsafeCheckpointError, load_pth, state_dict_from


def pretrained_file(
    model_name: str, tag: str = "imagenet", *, progress: bool = True, allow_unpinned: bool = False
) -> Path:
    """Path of the pretrained weights ``tag`` of ``model_name`` as published (the authors' checkpoint
    or a ``.weights.h5``), downloaded, hash-checked and cached on first use. ``allow_unpinned``
    permits the first download of a file without a pinned sha256 over plain http (see
    :func:`dynzoo.weights.download.fetch`)."""
    entry = get_weights(model_name, tag)
    if not entry.urls and entry.manual_download:
        manual = entry.manual_download
        raise ValueError(
            f"{entry.name}: the weights cannot be downloaded automatically. Get them from "
            f"{manual.get('page')} . {manual.get('instructions', '')}"
        )
    if not entry.file_name:
        raise ValueError(f"{entry.name}: the weight manifest gives no file name.")
    return fetch(
        entry.file_name,
        entry.urls,
        sha256=entry.sha256,
        size=entry.size,
        progress=progress,
        allow_unpinned=allow_unpinned,
    )


def save_weights_atomic(model, path: str | os.PathLike) -> Path:
    """``model.save_weights(path)`` through a temporary file, so that ``path`` is complete or absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{uuid.uuid4().hex}.tmp.weights.h5")
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_pretrained(
    model, model_name: str, tag: str, *, include_top: bool, official_loader: Callable[..., None]
) -> None:
    """Load the pretrained weights ``tag`` into ``model``. An official checkpoint is converted once;
    the converted ``.weights.h5`` is cached under the source file's sha256 (one file with the top,
    one without), so later calls neither download nor convert."""
    entry = get_weights(model_name, tag)
    source = pretrained_file(model_name, tag)
    if entry.format == "keras_weights_h5":
        model.load_weights(source, skip_mismatch=not include_top)
        return
    variant = "top" if include_top else "notop"
    converted = cache_dir("converted") / f"{model_name}-{tag}-{sha256_file(source)[:16]}-{variant}.weights.h5"
    with file_lock(converted):  # concurrent first uses convert once
        if converted.exists():
            try:
                model.load_weights(converted)
                return
            except Exception as e:  # unreadable or from an older layout: convert again
                print(f"dynzoo: discarding the converted cache {converted} ({type(e).__name__}: {e})", file=sys.stderr)
                converted.unlink(missing_ok=True)
        official_loader(model, os.fspath(source), include_top=include_top)
        save_weights_atomic(model, converted)


__all__ = [
    "CheckpointError",
    "DownloadError",
    "HashMismatchError",
    "UnsafeCheckpointError",
    "WeightEntry",
    "assign_state_dict",
    "fetch",
    "get_weights",
    "list_weights",
    "load_official_checkpoint",
    "load_pretrained",
    "load_pth",
    "official_targets",
    "pretrained_file",
    "pretrained_tags",
    "save_weights_atomic",
    "sha256_file",
    "state_dict_from",
]
