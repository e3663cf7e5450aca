"""Write PyTorch checkpoint files without torch (test helper): the zip format of ``torch.save``.

Used for checkpoints of models that have no official fixture and for crafted files. The pickle refers
to ``torch._utils._rebuild_tensor_v2`` and ``torch.FloatStorage`` as torch.save does; stand-in modules
under those names exist only while pickling.
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np

_STORAGE_NAMES = {np.dtype("float32"): "FloatStorage", np.dtype("int64"): "LongStorage"}


@contextlib.contextmanager
def _fake_torch():
    if "torch" in sys.modules:
        raise RuntimeError("a real torch is imported; this helper would shadow it")
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # pragma: no cover - only referenced, never called
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in _STORAGE_NAMES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch", "__qualname__": name}))
    torch._utils = utils
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield torch, utils
    finally:
        del sys.modules["torch"], sys.modules["torch._utils"]


class _Storage:
    def __init__(self, key: str, array: np.ndarray):
        self.key, self.array = key, array


def _dump_pickle(obj, extra_reduce=None) -> tuple[bytes, dict[str, np.ndarray]]:
    storages: dict[str, np.ndarray] = {}
    with _fake_torch() as (torch, utils):

        class Pickler(pickle.Pickler):
            def persistent_id(self, o):
                if isinstance(o, _Storage):
                    kind = getattr(torch, _STORAGE_NAMES[o.array.dtype])
                    return ("storage", kind, o.key, "cuda:0", o.array.size)
                return None

            def reducer_override(self, o):
                if isinstance(o, np.ndarray):
                    array = np.require(o, requirements="C")
                    key = str(len(storages))
                    storages[key] = array
                    strides = tuple(s // array.itemsize for s in array.strides) if array.ndim else ()
                    return utils._rebuild_tensor_v2, (
                        _Storage(key, array), 0, array.shape, strides, False, collections.OrderedDict()
                    )
                return NotImplemented

        buffer = io.BytesIO()
        Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue(), storages


def save_zip_checkpoint(obj, path: str | Path, pickle_bytes: bytes | None = None) -> Path:
    """Write ``obj`` (dicts of NumPy arrays) as torch.save's zip format; ``pickle_bytes`` replaces the
    data.pkl (for crafted files)."""
    data, storages = _dump_pickle(obj)
    path = Path(path)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle_bytes if pickle_bytes is not None else data)
        z.writestr("archive/byteorder", "little")
        for key, array in storages.items():
            z.writestr(f"archive/data/{key}", array.astype(array.dtype.newbyteorder("<")).tobytes())
        z.writestr("archive/version", "3\n")
    return path


def malicious_pickle(command: str) -> bytes:
    """A pickle that calls ``os.system(command)`` when loaded by an unrestricted unpickler."""

    class Exploit:
        def __reduce__(self):
            import os

            return os.system, (command,)

    return pickle.dumps({"state_dict": Exploit()}, protocol=2)
