"""Read PyTorch checkpoints without torch and without running any code they might carry.

Both of ``torch.save``'s formats are supported: the zip archive (PyTorch ≥ 1.6: ``data.pkl`` plus one
file per storage) and the legacy stream (a magic number, a protocol version, system info, the object
pickle, the list of storage keys, then each storage's raw bytes). The pickles are read by a restricted
unpickler that resolves only the globals a state dict needs (``collections.OrderedDict``, torch's
tensor-rebuild functions and storage types); anything else, e.g. ``os.system``, raises
:class:`UnsafeCheckpointError` before it can be called. Tensors come back as NumPy arrays on the CPU,
whatever device the checkpoint recorded.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """The file is not a PyTorch checkpoint this reader understands (truncated, another format…)."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint's pickle asks for something other than tensor data; nothing was executed."""


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        dtype = _STORAGE_DTYPES[name]
        if dtype == "bfloat16":
            import ml_dtypes

            dtype = ml_dtypes.bfloat16
        self.dtype = np.dtype(dtype)


class _Storage:
    """A storage whose bytes may arrive after the pickle (legacy format): tensors stay pending."""

    def __init__(self, storage_type: _StorageType, numel: int):
        self.dtype, self.numel, self.array = storage_type.dtype, numel, None


class _PendingTensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialize(self) -> np.ndarray:
        data = self.storage.array
        if data is None:
            raise CheckpointError("a tensor's storage is missing from the file.")
        if not self.size:
            return np.array(data[self.offset])
        if min(self.size) > 0:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
            if last >= data.size:
                raise CheckpointError("a tensor reaches past the end of its storage: the file is corrupted.")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size, strides=[s * data.itemsize for s in self.stride],
            writeable=False,
        )
        return np.array(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``."""
    if not isinstance(storage, _Storage):
        raise UnsafeCheckpointError("refusing to load: a tensor is rebuilt from something other than a storage.")
    return _PendingTensor(storage, storage_offset, size, stride)


def _materialize(obj):
    if isinstance(obj, _PendingTensor):
        return obj.materialize()
    if isinstance(obj, dict):
        for k in obj:
            obj[k] = _materialize(obj[k])
        return obj
    if isinstance(obj, list):
        return [_materialize(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(v) for v in obj)
    return obj


def _rebuild_parameter(data, requires_grad, backward_hooks, *_ignored):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeCheckpointError(
            f"refusing to load: the checkpoint's pickle asks for `{module}.{name}`, which is not tensor "
            "data. Only state dicts (OrderedDict, tensors, numbers, strings) are read; nothing was run."
        )

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise UnsafeCheckpointError(f"refusing to load: unexpected persistent id {pid!r}.")
        return self._load_storage(pid)


def load_pth(path: str | os.PathLike) -> Any:
    """Return the object saved in a PyTorch checkpoint, tensors as NumPy arrays.

    Raises :class:`CheckpointError` (a ``ValueError``) for files that are not checkpoints or are
    truncated, and :class:`UnsafeCheckpointError` for pickles that reference anything else.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {e}") from e
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            return _load_zip(data)
        return _load_legacy(data)
    except UnsafeCheckpointError:
        raise
    except CheckpointError as e:
        raise CheckpointError(f"{path!r}: {e}") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, struct.error,
            ValueError, TypeError, IndexError, AttributeError, MemoryError) as e:
        raise CheckpointError(
            f"{path!r} is not a readable PyTorch checkpoint (truncated or another format): "
            f"{type(e).__name__}: {e}"
        ) from None


def _load_zip(data: bytes) -> Any:
    archive = zipfile.ZipFile(io.BytesIO(data))
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
        raise CheckpointError("zip file without exactly one data.pkl: not a torch.save archive.")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in archive.namelist():
        byteorder = archive.read(prefix + "byteorder").decode().strip()
    storages: dict[str, _Storage] = {}

    def load_storage(pid):
        _, storage_type, key, _location, numel = pid[:5]
        if key not in storages:
            storage = storages[key] = _Storage(storage_type, numel)
            raw = archive.read(f"{prefix}data/{key}")
            dtype = storage.dtype.newbyteorder("<" if byteorder == "little" else ">")
            if len(raw) < numel * dtype.itemsize:
                raise CheckpointError(f"storage {key} is shorter than its {numel} elements.")
            storage.array = np.frombuffer(raw, dtype=dtype, count=numel).astype(storage.dtype)
        return storages[key]

    return _materialize(_RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), load_storage).load())


def _load_legacy(data: bytes) -> Any:
    stream = io.BytesIO(data)

    def plain():
        return _RestrictedUnpickler(stream, _no_storage).load()

    try:
        magic = plain()
    except Exception as e:  # any garbage: not a pickle stream at all
        raise CheckpointError(f"not a PyTorch checkpoint ({type(e).__name__}).") from None
    if magic != LEGACY_MAGIC:
        raise CheckpointError("not a PyTorch checkpoint (no zip archive and no legacy magic number).")
    if plain() != LEGACY_PROTOCOL:
        raise CheckpointError("unsupported legacy checkpoint protocol.")
    sys_info = plain()
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    storages: dict[str, _Storage] = {}

    def load_storage(pid):
        _, storage_type, key, _location, numel, view = pid[:6]
        if view is not None:
            raise CheckpointError("legacy storage views are not supported.")
        if key not in storages:
            storages[key] = _Storage(storage_type, numel)
        return storages[key]

    result = _RestrictedUnpickler(stream, load_storage).load()
    for key in plain():
        storage = storages[key]
        (numel,) = struct.unpack("<q" if little else ">q", stream.read(8))
        dtype = storage.dtype.newbyteorder("<" if little else ">")
        raw = stream.read(numel * dtype.itemsize)
        if len(raw) < numel * dtype.itemsize:
            raise CheckpointError(f"storage {key} is truncated.")
        storage.array = np.frombuffer(raw, dtype=dtype).astype(storage.dtype)
    return _materialize(result)


def _no_storage(pid):
    raise UnsafeCheckpointError("refusing to load: a header pickle references a storage.")


def state_dict_from(obj: Any, key: str = "state_dict") -> dict[str, np.ndarray]:
    """Unwrap ``{key: state_dict, …}`` if present and drop DataParallel's ``module.`` prefixes."""
    if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise CheckpointError("the checkpoint holds no state dict (a mapping from names to tensors).")
    return {
        (k[len("module."):] if k.startswith("module.") else k): v
        for k, v in obj.items()
        if isinstance(v, np.ndarray)
    }
