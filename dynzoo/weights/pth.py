"""Read PyTorch checkpoints without torch, without running any code they carry, and within a memory bound.

Both of ``torch.save``'s formats are supported: the zip archive (PyTorch ≥ 1.6: ``data.pkl`` plus one
uncompressed member per storage) and the legacy stream (a magic number, a protocol version, system info,
the object pickle, the list of storage keys, then each storage's raw bytes).

Checkpoints come from anywhere, so the reader treats every file as hostile:

- **No code.** A restricted unpickler resolves only the globals a state dict needs
  (``collections.OrderedDict``, torch's tensor-rebuild functions and storage types). Anything else,
  e.g. ``os.system``, raises :class:`UnsafeCheckpointError` before it can be called. The objects it hands
  to the pickle refuse ``BUILD`` (the opcode that sets attributes), so a pickle cannot alter them.
- **No reads outside the file.** A tensor's extent (offset, sizes and strides, negative, zero or huge)
  must lie inside its storage, and a storage's byte length must equal its declared element count.
- **Bounded memory.** Every allocation of tensor data, and an estimate of the Python objects the pickle
  builds, is charged before it is made against a budget (``max_bytes``: by default :data:`EXPANSION`
  times the file's size plus :data:`SLACK_BYTES`). Shared
  references are materialised once and stay shared, but a structure that unfolds to more than its
  pickle could hold without them is refused (see :class:`_Materializer`). The pickle is pre-scanned so
  that its memo indices cannot make the C unpickler allocate a huge memo. Nesting is bounded by
  :data:`MAX_DEPTH`, and cycles are refused. Only STORED zip members are read (``torch.save`` writes nothing else), with
  their sizes checked first, so compression bombs are refused unread.
- **No silent misreadings.** ``byteorder`` must be exactly ``little`` or ``big``; duplicated zip members,
  negative or inconsistent element counts and storages declared twice with different types are errors.
- **One kind of error.** Only :class:`CheckpointError` (and its subclass :class:`UnsafeCheckpointError`)
  leaves :func:`load_pth`; its message names the file.

Tensors come back as NumPy arrays on the CPU, whatever device the checkpoint recorded.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import pickletools
import struct
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

EXPANSION = 4
"""Default memory budget: tensor data may take this many times the file's size (plus SLACK_BYTES). A
checkpoint's tensors normally take about its size, once for the storages and once for the tensors."""
SLACK_BYTES = 1 << 20
MAX_DEPTH = 64
"""How deeply containers may nest (a state dict inside a training checkpoint is 3 or 4 levels deep)."""
MAX_DIMS = 64

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

# Opcodes whose argument is a memo index. CPython's C unpickler grows its memo to the largest index it
# is given, so a 5-byte LONG_BINPUT could ask for gigabytes: indices are checked before unpickling.
_MEMO_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})
# Opcodes that build a new Python object (a container, a call's result, a string or a number), each
# charged OBJECT_COST bytes before unpickling: an empty OrderedDict takes 144 bytes, a 1-tuple 64.
_OBJECT_OPCODES = frozenset(
    {
        "EMPTY_DICT",
        "DICT",
        "EMPTY_LIST",
        "LIST",
        "EMPTY_SET",
        "FROZENSET",
        "TUPLE",
        "TUPLE1",
        "TUPLE2",
        "TUPLE3",
        "REDUCE",
        "NEWOBJ",
        "NEWOBJ_EX",
        "OBJ",
        "INST",
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE8",
        "UNICODE",
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "BINBYTES",
        "SHORT_BINBYTES",
        "BINBYTES8",
        "BYTEARRAY8",
        "BINFLOAT",
        "FLOAT",
        "LONG",
        "LONG1",
        "LONG4",
        "INT",
        "BININT",
    }
)
OBJECT_COST = 160


class CheckpointError(ValueError):
    """The file is not a PyTorch checkpoint this reader accepts (truncated, another format, or crafted to
    read outside itself or to exhaust memory)."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint's pickle asks for something other than tensor data; nothing was executed."""


class _Frozen:
    """Objects handed to the pickle: no ``__dict__``, and ``BUILD`` on them is refused."""

    __slots__ = ()

    def __setstate__(self, state):
        raise UnsafeCheckpointError(
            f"refusing to load: the pickle tries to set attributes of a {type(self).__name__.lstrip('_')}."
        )


class _Budget(_Frozen):
    """Bytes the reader may still allocate: tensor data, zip members and the pickle's objects."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def charge(self, nbytes: int, what: str) -> None:
        if self.used + nbytes > self.limit:
            raise CheckpointError(
                f"reading it would take more than {self.limit:,} bytes of memory ({what}: {nbytes:,} bytes "
                f"more). The limit is {EXPANSION}× the file's size plus {SLACK_BYTES:,} bytes unless "
                "`max_bytes` is given to `load_pth`; a checkpoint's tensors fit in about its own size."
            )
        self.used += nbytes


class _StorageType(_Frozen):
    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name = name
        dtype = _STORAGE_DTYPES[name]
        if dtype == "bfloat16":
            import ml_dtypes

            dtype = ml_dtypes.bfloat16
        self.dtype = np.dtype(dtype)


class _Storage(_Frozen):
    """A storage whose bytes may arrive after the pickle (legacy format): tensors stay pending."""

    __slots__ = ("key", "dtype", "numel", "array")

    def __init__(self, key: str, storage_type: _StorageType, numel: int):
        self.key, self.dtype, self.numel, self.array = key, storage_type.dtype, numel, None

    def fill(self, raw: bytes, byteorder: str, budget: _Budget) -> None:
        """Take the storage's bytes, which must hold exactly ``numel`` elements."""
        if len(raw) != self.numel * self.dtype.itemsize:
            raise CheckpointError(
                f"storage {self.key!r} holds {len(raw):,} bytes, but its {self.numel:,} elements of "
                f"{self.dtype} need {self.numel * self.dtype.itemsize:,}."
            )
        stored = self.dtype.newbyteorder("<" if byteorder == "little" else ">")
        array = np.frombuffer(raw, dtype=stored)
        if stored != self.dtype:  # the other byte order: converting copies
            budget.charge(len(raw), f"storage {self.key!r}")
            array = array.astype(self.dtype)
        self.array = array


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_extent(storage: _Storage, offset, size, stride) -> None:
    """Refuse a tensor whose elements do not all lie inside its storage."""
    where = f"a tensor over storage {storage.key!r}"
    if not _is_int(offset) or not all(map(_is_int, size)) or not all(map(_is_int, stride)):
        raise CheckpointError(f"{where} has a non-integer offset, size or stride.")
    if len(size) != len(stride) or len(size) > MAX_DIMS:
        raise CheckpointError(f"{where} has {len(size)} sizes and {len(stride)} strides (at most {MAX_DIMS}).")
    if offset < 0 or min(size, default=0) < 0:
        raise CheckpointError(f"{where} has a negative offset or size: the file is corrupted or crafted.")
    if math.prod(size) == 0:
        if offset > storage.numel:
            raise CheckpointError(f"{where} starts past the end of its storage.")
        return
    low = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=False) if s < 0)
    high = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=False) if s > 0)
    if low < 0 or high >= storage.numel:
        raise CheckpointError(
            f"{where} reaches elements {low}…{high}, outside its {storage.numel} elements: the file is "
            "corrupted or crafted."
        )


class _PendingTensor(_Frozen):
    """A tensor whose extent was checked; its data is copied out of the storage on materialisation."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialize(self, budget: _Budget) -> np.ndarray:
        data = self.storage.array
        if data is None:
            raise CheckpointError(f"storage {self.storage.key!r} is missing from the file.")
        numel = math.prod(self.size)
        budget.charge(numel * data.itemsize, f"a tensor of shape {self.size}")
        if numel == 0:
            return np.empty(self.size, dtype=data.dtype)
        # Strides of length-1 dimensions never move the pointer; zeroing them keeps huge ones from
        # overflowing NumPy's byte strides. The others are bounded by the extent check.
        strides = [s * data.itemsize if n > 1 else 0 for n, s in zip(self.size, self.stride, strict=False)]
        view = np.lib.stride_tricks.as_strided(data[self.offset :], shape=self.size, strides=strides, writeable=False)
        return np.array(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: checks the tensor's extent at once."""
    if not isinstance(storage, _Storage):
        raise UnsafeCheckpointError("refusing to load: a tensor is rebuilt from something other than a storage.")
    if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)):
        raise CheckpointError("a tensor's size or stride is not a sequence.")
    size, stride = tuple(size), tuple(stride)
    _check_extent(storage, storage_offset, size, stride)
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, *_ignored):
    return data


class _Global(_Frozen):
    """An allowed global, callable by the pickle but immune to ``BUILD``."""

    __slots__ = ("function",)

    def __init__(self, function: Callable):
        self.function = function

    def __call__(self, *args):
        return self.function(*args)


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Materializer:
    """Replaces pending tensors by arrays, each allocated once, so that shared references stay shared.

    The structure is also measured as a consumer that copies it would see it, every reference unfolded:
    it may hold at most ``max_nodes`` containers and tensors (the pickle's opcode count: a tree built
    without shared references cannot have more), and its tensors are charged to the budget once per
    reference. A "billion laughs" file, a small pickle of shared lists nested in each other, is refused
    by the first rule; one tensor referenced thousands of times, by the second. Cycles are refused.
    """

    def __init__(self, budget: _Budget, max_nodes: int):
        self.budget, self.max_nodes, self.nodes = budget, max_nodes, 0
        # id → (object, result, unfolded nodes, unfolded tensor bytes); the object is kept alive so
        # that its id is not reused while the walk runs.
        self.done: dict[int, tuple[Any, Any, int, int]] = {}
        self.active: set[int] = set()

    def _count(self, nodes: int, nbytes: int) -> None:
        self.nodes += nodes
        if self.nodes > self.max_nodes:
            raise CheckpointError(
                f"its objects unfold to more than {self.max_nodes:,} containers and tensors, more than "
                "its pickle has opcodes: it is built from shared references to inflate (a 'billion laughs' file)."
            )
        if nbytes:
            self.budget.charge(nbytes, "another reference to already read tensors")

    def __call__(self, obj, depth: int = 0) -> tuple[Any, int, int]:
        """``(result, unfolded nodes, unfolded tensor bytes)`` of ``obj``."""
        if not isinstance(obj, (_PendingTensor, dict, list, tuple)):
            return obj, 0, 0
        key = id(obj)
        if key in self.done:
            _, result, nodes, nbytes = self.done[key]
            self._count(nodes, nbytes)
            return result, nodes, nbytes
        if key in self.active:
            raise CheckpointError("its objects contain themselves (a reference cycle); a state dict has none.")
        if depth > MAX_DEPTH:
            raise CheckpointError(f"it nests containers deeper than {MAX_DEPTH} levels.")
        self._count(1, 0)
        self.active.add(key)
        if isinstance(obj, _PendingTensor):
            result = obj.materialize(self.budget)
            nodes, nbytes = 1, result.nbytes
        else:
            # dicts and lists are updated in place, which keeps their identity; tuples are rebuilt
            indices = obj if isinstance(obj, dict) else range(len(obj))
            parts = {i: self(obj[i], depth + 1) for i in indices}
            if isinstance(obj, tuple):
                result = tuple(part[0] for part in parts.values())
            else:
                for i, part in parts.items():
                    obj[i] = part[0]
                result = obj
            nodes = 1 + sum(part[1] for part in parts.values())
            nbytes = sum(part[2] for part in parts.values())
        self.active.discard(key)
        self.done[key] = (obj, result, nodes, nbytes)
        return result, nodes, nbytes


def _check_pickle(stream: io.BytesIO, budget: _Budget) -> int:
    """Walk the opcodes of the pickle at the stream's position, then rewind; return their number.

    Every memo index must be below the number of opcodes, as the indices of any pickler's output are,
    and the objects the pickle builds are charged to the budget (:data:`OBJECT_COST` bytes each)."""
    start, count, objects = stream.tell(), 0, 0
    for count, (opcode, arg, _) in enumerate(pickletools.genops(stream), start=1):
        if opcode.name in _MEMO_OPCODES and not (_is_int(arg) and 0 <= arg < count):
            raise CheckpointError(f"the pickle uses memo index {arg!r} at opcode {count}: the file is crafted.")
        objects += opcode.name in _OBJECT_OPCODES
    budget.charge(objects * OBJECT_COST, f"the {objects:,} Python objects of its pickle")
    stream.seek(start)
    return count


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return _Global(_ALLOWED_GLOBALS[(module, name)])
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeCheckpointError(
            f"refusing to load: the checkpoint's pickle asks for `{module}.{name}`, which is not tensor "
            "data. Only state dicts (OrderedDict, tensors, numbers, strings) are read; nothing was run."
        )

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise UnsafeCheckpointError(f"refusing to load: unexpected persistent id {pid!r:.80}.")
        return self._load_storage(pid)


def _unpickle(stream: io.BytesIO, load_storage: Callable, budget: _Budget) -> tuple[Any, int]:
    """The object of the pickle at the stream's position, and the pickle's opcode count."""
    opcodes = _check_pickle(stream, budget)
    return _RestrictedUnpickler(stream, load_storage).load(), opcodes


def _declare_storage(storages: dict[str, _Storage], storage_type, key, numel) -> _Storage:
    """The storage ``key`` of a persistent id; a key declared again must agree with its first use."""
    if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not _is_int(numel):
        raise CheckpointError("a storage reference is malformed (type, key or element count).")
    if numel < 0:
        raise CheckpointError(f"storage {key!r} declares {numel} elements.")
    if key in storages:
        storage = storages[key]
        if storage.dtype != storage_type.dtype or storage.numel != numel:
            raise CheckpointError(f"storage {key!r} is declared twice with different types or sizes.")
        return storage
    storages[key] = _Storage(key, storage_type, numel)
    return storages[key]


def load_pth(path: str | os.PathLike, *, max_bytes: int | None = None) -> Any:
    """Return the object saved in a PyTorch checkpoint, tensors as NumPy arrays.

    Args:
        path: a ``torch.save`` file (zip or legacy format).
        max_bytes: the most bytes to allocate for tensor data, zip members and (estimated) the pickle's
            objects; default :data:`EXPANSION` × the file's size + :data:`SLACK_BYTES`. Files that would
            need more are refused before allocating.

    Raises:
        CheckpointError: (a ``ValueError``) the file is unreadable, truncated, not a checkpoint, or
            crafted (reads outside its storages, exceeds the memory bound, nests too deeply…);
            :class:`UnsafeCheckpointError` where its pickle references anything but tensor data.
            No other exception leaves this function.
    """
    if max_bytes is not None and (not _is_int(max_bytes) or max_bytes < 0):
        raise ValueError(f"`max_bytes` must be a non-negative int, got {max_bytes!r}.")
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {e.strerror or e}") from None
    budget = _Budget(EXPANSION * len(data) + SLACK_BYTES if max_bytes is None else max_bytes)
    try:
        if data[:4] == b"PK\x03\x04" or zipfile.is_zipfile(io.BytesIO(data)):
            return _load_zip(data, budget)
        return _load_legacy(data, budget)
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path!r}: {e}") from None
    except CheckpointError as e:
        raise CheckpointError(f"{path!r}: {e}") from None
    except Exception as e:  # noqa: BLE001 - whatever a crafted file triggers becomes one error type
        raise CheckpointError(
            f"{path!r} is not a readable PyTorch checkpoint (truncated, another format or crafted): "
            f"{type(e).__name__}: {e}"
        ) from None


def _zip_members(data: bytes) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
    """The archive and its members, refused unless every member is stored uncompressed, unencrypted,
    inside the file and named once."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = info.filename
        if name in members:
            raise CheckpointError(f"the zip archive holds {name!r} twice.")
        if info.flag_bits & 0x1:
            raise CheckpointError(f"zip member {name!r} is encrypted.")
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(
                f"zip member {name!r} is compressed (method {info.compress_type}); torch.save stores "
                "members uncompressed, and compressed ones are not read."
            )
        if info.file_size != info.compress_size or info.header_offset + info.compress_size > len(data):
            raise CheckpointError(f"zip member {name!r} declares a size that does not fit in the file.")
        members[name] = info
    return archive, members


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget) -> bytes:
    budget.charge(info.file_size, f"zip member {info.filename!r}")
    return archive.read(info)


def _load_zip(data: bytes, budget: _Budget) -> Any:
    archive, members = _zip_members(data)
    pickles = [n for n in members if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
        raise CheckpointError("zip file without exactly one data.pkl: not a torch.save archive.")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in members:
        raw_order = _read_member(archive, members[prefix + "byteorder"], budget)
        if raw_order not in (b"little", b"big"):
            raise CheckpointError(f"its byteorder is {raw_order[:20]!r}; only 'little' and 'big' are defined.")
        byteorder = raw_order.decode()
    storages: dict[str, _Storage] = {}

    def load_storage(pid):
        if len(pid) != 5:
            raise CheckpointError("a storage reference has the wrong length for the zip format.")
        _, storage_type, key, _location, numel = pid
        storage = _declare_storage(storages, storage_type, key, numel)
        if storage.array is None:
            member = members.get(f"{prefix}data/{key}")
            if member is None:
                raise CheckpointError(f"storage {key!r} is missing from the archive.")
            storage.fill(_read_member(archive, member, budget), byteorder, budget)
        return storage

    stream = io.BytesIO(_read_member(archive, members[pickles[0]], budget))
    result, opcodes = _unpickle(stream, load_storage, budget)
    return _Materializer(budget, opcodes)(result)[0]


def _load_legacy(data: bytes, budget: _Budget) -> Any:
    stream = io.BytesIO(data)

    def plain():
        return _unpickle(stream, _no_storage, budget)[0]

    try:
        magic = plain()
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any garbage: not a pickle stream at all
        raise CheckpointError(f"not a PyTorch checkpoint ({type(e).__name__}).") from None
    if magic != LEGACY_MAGIC:
        raise CheckpointError("not a PyTorch checkpoint (no zip archive and no legacy magic number).")
    if plain() != LEGACY_PROTOCOL:
        raise CheckpointError("unsupported legacy checkpoint protocol.")
    sys_info = plain()
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    if not isinstance(little, bool):
        raise CheckpointError(f"its system info gives little_endian={little!r}, not a boolean.")
    storages: dict[str, _Storage] = {}

    def load_storage(pid):
        if len(pid) != 6:
            raise CheckpointError("a storage reference has the wrong length for the legacy format.")
        _, storage_type, key, _location, numel, view = pid
        if view is not None:
            raise CheckpointError("legacy storage views are not supported.")
        return _declare_storage(storages, storage_type, key, numel)

    result, opcodes = _unpickle(stream, load_storage, budget)
    keys = plain()
    if not isinstance(keys, list) or len(set(map(str, keys))) != len(keys):
        raise CheckpointError("the list of storage keys is malformed or repeats a key.")
    for key in keys:
        storage = storages.get(key) if isinstance(key, str) else None
        if storage is None:
            raise CheckpointError(f"the file stores {key!r}, which no tensor declared.")
        (numel,) = struct.unpack("<q" if little else ">q", stream.read(8))
        if numel != storage.numel:
            raise CheckpointError(
                f"storage {key!r} is written with {numel} elements but declared with {storage.numel}."
            )
        nbytes = numel * storage.dtype.itemsize
        if nbytes > len(data) - stream.tell():
            raise CheckpointError(f"storage {key!r} is truncated.")
        budget.charge(nbytes, f"storage {key!r}")
        storage.fill(stream.read(nbytes), "little" if little else "big", budget)
    return _Materializer(budget, opcodes)(result)[0]


def _no_storage(pid):
    raise UnsafeCheckpointError("refusing to load: a header pickle references a storage.")


def state_dict_from(obj: Any, key: str = "state_dict") -> dict[str, np.ndarray]:
    """Unwrap ``{key: state_dict, …}`` if present and drop DataParallel's ``module.`` prefixes."""
    if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise CheckpointError("the checkpoint holds no state dict (a mapping from names to tensors).")
    return {
        (k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items() if isinstance(v, np.ndarray)
    }
