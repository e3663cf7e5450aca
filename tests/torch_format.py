"""Write PyTorch checkpoint files without torch (test helper): both formats of ``torch.save``.

Used for checkpoints of models that have no official fixture and for crafted files. The pickle refers
to ``torch._utils._rebuild_tensor_v2`` and ``torch.FloatStorage`` as torch.save does; stand-in modules
under those names exist only while pickling. NumPy arrays become tensors over storages of their own;
:class:`RawTensor` writes a tensor with any offset, size and stride over a given storage.
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

_STORAGE_NAMES = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype("int64"): "LongStorage",
}


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
    def __init__(self, key: str, array: np.ndarray, numel: int | None = None):
        self.key, self.array = key, array
        self.numel = array.size if numel is None else numel


class RawTensor:
    """A tensor pickled with exactly these ``offset``, ``size`` and ``stride`` over the storage ``key``
    holding ``array`` (whose declared element count is ``numel``, by default its size); a ``state``
    is applied to the rebuilt tensor by the BUILD opcode."""

    def __init__(
        self,
        key: str,
        array: np.ndarray,
        offset: int,
        size: tuple,
        stride: tuple,
        numel: int | None = None,
        state: dict | None = None,
    ):
        self.storage = _Storage(key, np.asarray(array), numel)
        self.offset, self.size, self.stride, self.state = offset, size, stride, state


def _dump_pickle(obj, legacy: bool = False) -> tuple[bytes, dict[str, np.ndarray]]:
    storages: dict[str, np.ndarray] = {}
    with _fake_torch() as (torch, utils):

        class Pickler(pickle.Pickler):
            def persistent_id(self, o):
                if isinstance(o, _Storage):
                    kind = getattr(torch, _STORAGE_NAMES[o.array.dtype])
                    return ("storage", kind, o.key, "cuda:0", o.numel) + ((None,) if legacy else ())
                return None

            def reducer_override(self, o):
                if isinstance(o, RawTensor):
                    storages.setdefault(o.storage.key, o.storage.array)
                    return (
                        utils._rebuild_tensor_v2,
                        (o.storage, o.offset, o.size, o.stride, False, collections.OrderedDict()),
                        o.state,
                    )
                if isinstance(o, np.ndarray):
                    array = np.require(o, requirements="C")
                    key = str(len(storages))
                    storages[key] = array
                    strides = tuple(s // array.itemsize for s in array.strides) if array.ndim else ()
                    return utils._rebuild_tensor_v2, (
                        _Storage(key, array),
                        0,
                        array.shape,
                        strides,
                        False,
                        collections.OrderedDict(),
                    )
                return NotImplemented

        buffer = io.BytesIO()
        Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue(), storages


def _in_order(array: np.ndarray, byteorder: str = "little") -> bytes:
    return array.astype(array.dtype.newbyteorder(">" if byteorder == "big" else "<")).tobytes()


def save_zip_checkpoint(
    obj,
    path: str | Path,
    pickle_bytes: bytes | None = None,
    *,
    byteorder: str = "little",
    compress_type: int = zipfile.ZIP_STORED,
    extra_members: dict[str, bytes] | None = None,
) -> Path:
    """Write ``obj`` (dicts of NumPy arrays and :class:`RawTensor`) as torch.save's zip format. For
    crafted files: ``pickle_bytes`` replaces the data.pkl, ``byteorder`` is written as given, the
    storages (in the order ``byteorder`` names, little-endian for any other value) are compressed
    with ``compress_type``, and ``extra_members`` are appended."""
    data, storages = _dump_pickle(obj)
    path = Path(path)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle_bytes if pickle_bytes is not None else data)
        z.writestr("archive/byteorder", byteorder)
        for key, array in storages.items():
            z.writestr(f"archive/data/{key}", _in_order(array, byteorder), compress_type=compress_type)
        z.writestr("archive/version", "3\n")
        for name, content in (extra_members or {}).items():
            z.writestr(name, content)
    return path


def save_legacy_checkpoint(obj, path: str | Path, *, written_numel: dict[str, int] | None = None) -> Path:
    """Write ``obj`` in torch.save's legacy format (``_use_new_zipfile_serialization=False``): magic
    number, protocol, system info, the object, the storage keys, then each storage as its element
    count and raw bytes. ``written_numel`` overrides the count written before a storage's bytes."""
    data, storages = _dump_pickle(obj, legacy=True)
    with open(path, "wb") as f:
        for header in (
            0x1950A86A20F9469CFC6C,
            1001,
            {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}},
        ):
            pickle.dump(header, f, protocol=2)
        f.write(data)
        pickle.dump(list(storages), f, protocol=2)
        for key, array in storages.items():
            numel = (written_numel or {}).get(key, array.size)
            f.write(np.int64(numel).astype("<i8").tobytes() + _in_order(array))
    return Path(path)


def malicious_pickle(command: str) -> bytes:
    """A pickle that calls ``os.system(command)`` when loaded by an unrestricted unpickler."""

    class Exploit:
        def __reduce__(self):
            import os

            return os.system, (command,)

    return pickle.dumps({"state_dict": Exploit()}, protocol=2)
