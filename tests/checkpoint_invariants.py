"""What must hold for any file handed to the .pth reader: shared by the fuzz harness
(``fuzz_checkpoints.py``) and the regression run over its corpus (``test_checkpoint_fuzz.py``).

A fuzz input is one mode byte and a payload:

- even mode byte: the payload is a checkpoint file as it is;
- odd mode byte: the payload is a ``data.pkl``, placed in a valid zip archive beside storages
  ``0``…``3`` (16 float32 elements each), so that mutations of the pickle reach the unpickler and the
  tensor checks instead of failing the zip's CRC.
"""

from __future__ import annotations

import io
import os
import tempfile
import tracemalloc
import zipfile
from typing import Any

import numpy as np

from dynzoo.weights.pth import EXPANSION, SLACK_BYTES, CheckpointError, load_pth

# Python objects the unpickler builds (a dict per 1-byte opcode, at most) on top of the tensor budget.
OBJECT_SLACK = 4 << 20
STORAGES = {str(i): np.arange(16 * i, 16 * (i + 1), dtype="<f4") for i in range(4)}


def wrap_pickle(pickle_bytes: bytes) -> bytes:
    """A torch.save zip archive holding ``pickle_bytes`` as its data.pkl and the storages above."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/byteorder", "little")
        for key, array in STORAGES.items():
            z.writestr(f"archive/data/{key}", array.tobytes())
    return buffer.getvalue()


def decode_input(data: bytes) -> bytes:
    """The checkpoint file that the fuzz input ``data`` stands for."""
    if not data:
        return b""
    return wrap_pickle(data[1:]) if data[0] % 2 else data[1:]


def _arrays(obj, seen: set[int] | None = None):
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _arrays(value, seen)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _arrays(value, seen)


def assert_values_come_from_the_file(obj, file_bytes: bytes) -> None:
    """Every element of every array, as bytes in either byte order, occurs in the file: nothing was read
    from outside it (a heap read would show up as values the file does not hold)."""
    windows: dict[int, set[bytes]] = {}
    for array in _arrays(obj):
        size = array.itemsize
        if size not in windows:
            windows[size] = {file_bytes[i : i + size] for i in range(len(file_bytes) - size + 1)}
        for element in np.ascontiguousarray(array).reshape(-1).view(f"V{size}"):
            raw = element.tobytes()
            assert raw in windows[size] or raw[::-1] in windows[size], (
                f"an element of a {array.dtype} array of shape {array.shape} ({raw.hex()}) is not in the file"
            )


def check_load(file_bytes: bytes, model=None) -> Any:
    """Read ``file_bytes`` with :func:`load_pth` and assert the invariants; return what it loaded, or
    None where it was refused. An exception other than CheckpointError propagates (a finding).

    - memory: the peak of what Python and NumPy allocated stays within the reader's budget plus
      :data:`OBJECT_SLACK`;
    - values: every array element comes from the file;
    - with ``model`` (a MicroNet-M0), loading the file into it, as ``create_model(weights=path)``
      does, fails only with a ValueError (a CheckpointError or a key/shape mismatch).
    """
    from dynzoo.models.micronet import load_micronet_checkpoint

    fd, path = tempfile.mkstemp(suffix=".pth")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(file_bytes)
        # Measured from the current traced size. A caller that calls this many times (the fuzzer)
        # starts tracing once: starting and stopping it per call leaks about 2 kB each time.
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            loaded = load_pth(path)
        except CheckpointError:
            loaded = None
        finally:
            peak = tracemalloc.get_traced_memory()[1] - before
            if started:
                tracemalloc.stop()
        bound = EXPANSION * len(file_bytes) + SLACK_BYTES + OBJECT_SLACK
        assert peak <= bound, f"the reader allocated {peak:,} bytes for a {len(file_bytes):,}-byte file"
        if loaded is None:
            return None
        assert_values_come_from_the_file(loaded, file_bytes)
        if model is not None:
            try:
                load_micronet_checkpoint(model, path)
            except ValueError:
                pass
        return loaded
    finally:
        os.unlink(path)
