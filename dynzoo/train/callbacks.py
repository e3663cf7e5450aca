"""Fault-tolerant checkpoints and a throughput meter (Keras callbacks)."""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

CHECKPOINT_FILE = "checkpoint.npz"


def _state_variables(model: keras.Model) -> list:
    """Everything a resumed run needs: the model's variables (weights, BN statistics, dropout seed
    states) and the optimizer's (its iteration counter, momenta)."""
    return [*model.variables, *model.optimizer.variables]


class ResumableCheckpoint(keras.callbacks.Callback):
    """Save the whole training state every ``every_steps`` iterations and at each epoch's last step.

    The state (model and optimizer variables, the global step) is written to a temporary file and
    renamed over ``directory/checkpoint.npz``, so a process killed at any moment (SIGKILL included)
    leaves the previous checkpoint intact: a resumed run loses at most ``every_steps`` steps. The
    position in the data follows from the step (the input pipeline is a function of it).

    Args:
        directory: where the checkpoint lives.
        every_steps: save every this many iterations (0: only at epoch ends).
        write: this process writes (the chief under multi-worker training; the others only restore).
        identity: what the run is (model, data, recipe; JSON values), saved with the state so that
            :func:`restore_checkpoint` refuses to resume another run from it.
        resumed_epoch: ``{"steps", "logs"}`` of the epoch a resumed run continues
            (from :func:`restore_checkpoint`): its first epoch's logs then average over the whole epoch, the
            steps before the interruption included, so that ``log.csv`` (written by a callback after
            this one) shows the same row as an uninterrupted run.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        every_steps: int,
        write: bool = True,
        identity: dict[str, Any] | None = None,
        resumed_epoch: dict[str, Any] | None = None,
    ):
        super().__init__()
        if every_steps < 0:
            raise ValueError(f"`every_steps` must be >= 0, got {every_steps}.")
        self.path = Path(directory) / CHECKPOINT_FILE
        self.every_steps = every_steps
        self.write = write
        self.identity = identity
        self._carried = resumed_epoch
        self._progress: dict[str, Any] | None = None
        self._saved_step = None

    def _whole_epoch(self, steps: int, logs: dict[str, Any] | None) -> dict[str, Any]:
        """``{"steps", "logs"}`` over the epoch so far: this fit's ``steps`` and running averages
        ``logs``, merged with the part of the epoch run before a resume."""
        logs = {k: float(v) for k, v in (logs or {}).items() if not k.startswith("val_") and k != "learning_rate"}
        if not self._carried:
            return {"steps": steps, "logs": logs}
        before, saved = self._carried["steps"], self._carried["logs"]
        total = before + steps
        return {
            "steps": total,
            "logs": {k: (saved[k] * before + v * steps) / total if k in saved else v for k, v in logs.items()},
        }

    def on_train_batch_end(self, batch, logs=None):
        self._progress = self._whole_epoch(batch + 1, logs)
        # The epoch's last step is saved here, before Keras runs the validation: a failing validation
        # (an undecodable test image) must not cost the epoch.
        last_of_epoch = batch + 1 == (self.params or {}).get("steps")
        if last_of_epoch or (self.every_steps and self._global_step() % self.every_steps == 0):
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        if self._carried and logs is not None:
            logs.update(self._whole_epoch((self.params or {}).get("steps") or 0, logs)["logs"])
        self._carried, self._progress = None, None
        if self._global_step() != self._saved_step:  # the epoch's length was unknown
            self.save()

    def _global_step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def save(self) -> None:
        if not self.write:
            return
        arrays = {f"v{i:05d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(_state_variables(self.model))}
        paths = [v.path for v in _state_variables(self.model)]
        step = self._global_step()
        meta = {"global_step": step, "paths": paths, "run": self.identity, "epoch_progress": self._progress}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._saved_step = step


def _read(path: Path) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The checkpoint's metadata and arrays; an unreadable file is one ValueError that names it."""
    try:
        with np.load(path) as data:
            meta = json.loads(data["__meta__"].tobytes())
            return meta, [data[f"v{i:05d}"] for i in range(len(meta["paths"]))]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"the checkpoint {os.fspath(path)!r} is unreadable (truncated or not a dynzoo checkpoint: "
            f"{type(e).__name__}). Delete it to start over, or use another --model-dir."
        ) from None


def checkpoint_step(directory: str | os.PathLike) -> int | None:
    """The global step of the checkpoint in ``directory``, or None if there is none."""
    path = Path(directory) / CHECKPOINT_FILE
    return int(_read(path)[0]["global_step"]) if path.exists() else None


def restore_checkpoint(
    directory: str | os.PathLike, model: keras.Model, identity: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any] | None] | None:
    """Load the checkpoint in ``directory`` into ``model`` and its (built) optimizer; return its global
    step and the progress of the epoch it was saved in (``{"steps", "logs"}``: how many of the epoch's
    steps had run and their running averages; None if unknown), or None if there is no checkpoint.
    Raises ``ValueError`` when it belongs to another model, or to a run whose ``identity`` (model, data,
    recipe) differs from this one's."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.exists():
        return None
    variables = _state_variables(model)
    meta, arrays = _read(path)
    saved = meta.get("run")
    if identity is not None and saved is not None:
        ours = json.loads(json.dumps(identity))
        differ = [
            f"{key}: {saved.get(key)!r} there, {ours.get(key)!r} now"
            for key in sorted(set(ours) | set(saved))
            if saved.get(key) != ours.get(key)
        ]
        if differ:
            raise ValueError(
                f"the checkpoint {os.fspath(path)!r} belongs to another run ({'; '.join(differ)}); "
                "use another --model-dir, or --noresume to start over in this one."
            )
    problems = []
    if len(arrays) != len(variables):
        problems.append(f"{len(arrays)} saved variables, the model and optimizer have {len(variables)}")
    else:
        problems = [
            f"{v.path}: saved {a.shape}, expected {tuple(v.shape)}"
            for v, a in zip(variables, arrays, strict=False)
            if tuple(a.shape) != tuple(v.shape)
        ]
    if problems:
        raise ValueError(
            f"the checkpoint {os.fspath(path)!r} belongs to another model or recipe "
            f"({'; '.join(problems[:5])}); use another --model-dir or --noresume."
        )
    for variable, value in zip(variables, arrays, strict=False):
        variable.assign(value)
    return int(meta["global_step"]), meta.get("epoch_progress")


class Throughput(keras.callbacks.Callback):
    """Training images per second of each epoch, timed from its second batch (the first one traces
    and compiles the step)."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.images_per_second: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._batches = None, 0

    def on_train_batch_end(self, batch, logs=None):
        if self._start is None:
            self._start = time.perf_counter()
        else:
            self._batches += 1

    def on_epoch_end(self, epoch, logs=None):
        if self._batches:
            self.images_per_second.append(self._batches * self.batch_size / (time.perf_counter() - self._start))
