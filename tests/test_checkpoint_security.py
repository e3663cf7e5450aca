"""The .pth reader against crafted checkpoints: each is refused with CheckpointError, quickly, within the
memory bound and without reading outside the file (issue: untrusted checkpoints)."""

from __future__ import annotations

import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from checkpoint_invariants import check_load
from torch_format import RawTensor, save_legacy_checkpoint, save_zip_checkpoint

from dynzoo.weights import CheckpointError, UnsafeCheckpointError, load_pth
from dynzoo.weights.pth import EXPANSION, SLACK_BYTES

FLOATS = np.arange(10, dtype=np.float32)
PROTO = b"\x80\x02"


def _raw(offset, size, stride, array=FLOATS, numel=None):
    return {"w": RawTensor("s", array, offset, size, stride, numel=numel)}


def _nested_lists(levels: int, width: int) -> bytes:
    """A 'billion laughs' pickle: each list holds ``width`` references to the one below."""
    out = PROTO + b"K\x01" + b"q\x00"  # the int 1, memo 0
    for level in range(1, levels + 1):
        out += b"]" + b"(" + b"h" + bytes([level - 1]) * 1 + (b"h" + bytes([level - 1])) * (width - 1)
        out += b"e" + b"q" + bytes([level])
    return out + b"."


def _deep_list(depth: int) -> bytes:
    return PROTO + b"]" * depth + b"a" * (depth - 1) + b"."


def _many_references(count: int, distinct: bool) -> dict:
    """``count`` names for one 1 MB tensor (one object, or ``count`` tensors over one storage)."""
    array = np.zeros(1 << 18, np.float32)
    shared = RawTensor("big", array, 0, (array.size,), (1,))
    return {f"k{i}": RawTensor("big", array, 0, (array.size,), (1,)) if distinct else shared for i in range(count)}


def _zip_with(path: Path, compress_type: int) -> Path:
    """A 16 MB zero storage, compressed: a zip bomb in miniature (the reader must not inflate it)."""
    return save_zip_checkpoint({"w": np.zeros(1 << 22, np.float32)}, path, compress_type=compress_type)


def _patched_zip(path: Path, patch) -> Path:
    """A valid checkpoint whose zip structures are then edited by ``patch(bytearray)``."""
    save_zip_checkpoint({"w": FLOATS}, path)
    data = bytearray(path.read_bytes())
    patch(data)
    path.write_bytes(bytes(data))
    return path


LOCAL, CENTRAL = b"PK\x03\x04", b"PK\x01\x02"  # the zip's local and central file headers


def _edit_headers(data: bytearray, offsets: dict[bytes, int], edit) -> None:
    """``edit(old) -> new`` on the 2-byte field at ``offsets[signature]`` of every header."""
    for signature, offset in offsets.items():
        at = data.find(signature)
        while at >= 0:
            (old,) = struct.unpack_from("<H", data, at + offset)
            struct.pack_into("<H", data, at + offset, edit(old))
            at = data.find(signature, at + 4)


def _set_flag_bits(data: bytearray, bits: int) -> None:
    _edit_headers(data, {LOCAL: 6, CENTRAL: 8}, lambda old: old | bits)


def _set_method(data: bytearray, method: int) -> None:
    _edit_headers(data, {LOCAL: 8, CENTRAL: 10}, lambda old: method)


def _set_version(data: bytearray, version: int) -> None:  # the version needed to extract
    _edit_headers(data, {CENTRAL: 6}, lambda old: version)


def _duplicate_storage(path: Path) -> Path:
    save_zip_checkpoint({"w": FLOATS}, path, extra_members={"archive/data/0": (FLOATS + 100).tobytes()})
    return path


CRAFTED = {
    # reads outside the storage
    "negative stride past the start": lambda p: save_zip_checkpoint(_raw(3, (1000000,), (-1,), FLOATS[:4]), p),
    "negative offset": lambda p: save_zip_checkpoint(_raw(-2, (6,), (1,)), p),
    "offset past the end": lambda p: save_zip_checkpoint(_raw(8, (3,), (1,)), p),
    "stride past the end": lambda p: save_zip_checkpoint(_raw(0, (3,), (5,)), p),
    "huge stride": lambda p: save_zip_checkpoint(_raw(0, (2,), (2**62,)), p),
    "negative size": lambda p: save_zip_checkpoint(_raw(0, (-3,), (1,)), p),
    "float offset": lambda p: save_zip_checkpoint(_raw(0.5, (3,), (1,)), p),
    "sizes and strides differ in length": lambda p: save_zip_checkpoint(_raw(0, (2, 2), (1,)), p),
    "scalar past the end": lambda p: save_zip_checkpoint(_raw(10, (), ()), p),
    # memory exhaustion
    "zero strides over 16 bytes": lambda p: save_zip_checkpoint(_raw(0, (100000, 100000), (0, 0), FLOATS[:4]), p),
    "billion laughs": lambda p: save_zip_checkpoint({}, p, pickle_bytes=_nested_lists(9, 10)),
    "one tensor referenced 16384 times": lambda p: save_zip_checkpoint(_many_references(16384, False), p),
    "16384 tensors over one storage": lambda p: save_zip_checkpoint(_many_references(16384, True), p),
    "huge memo index": lambda p: save_zip_checkpoint(
        {}, p, pickle_bytes=PROTO + b"N" + b"r" + struct.pack("<I", 0xFFFFFFF0) + b"."
    ),
    "get of a missing memo index": lambda p: save_zip_checkpoint({}, p, pickle_bytes=PROTO + b"h\x07."),
    "deflate bomb": lambda p: _zip_with(p, zipfile.ZIP_DEFLATED),
    "bzip2 bomb": lambda p: _zip_with(p, zipfile.ZIP_BZIP2),
    "lzma bomb": lambda p: _zip_with(p, zipfile.ZIP_LZMA),
    # exceptions that escaped
    "self-referencing list": lambda p: save_zip_checkpoint({}, p, pickle_bytes=PROTO + b"]q\x00h\x00a."),
    "5000-deep list": lambda p: save_zip_checkpoint({}, p, pickle_bytes=_deep_list(5000)),
    "encrypted members": lambda p: _patched_zip(p, lambda d: _set_flag_bits(d, 0x1)),
    "zstd method 93": lambda p: _patched_zip(p, lambda d: _set_method(d, 93)),
    "aes method 99": lambda p: _patched_zip(p, lambda d: _set_method(d, 99)),
    "zip version 13.0": lambda p: _patched_zip(p, lambda d: _set_version(d, 130)),
    "corrupted local header": lambda p: _patched_zip(
        _zip_with(p, zipfile.ZIP_DEFLATED), lambda d: d.__setitem__(slice(200, 260), b"\xff" * 60)
    ),
    "legacy numel 2**62": lambda p: save_legacy_checkpoint({"w": FLOATS}, p, written_numel={"0": 2**62}),
    # silent misreadings
    "byteorder LITTLE": lambda p: save_zip_checkpoint({"w": FLOATS}, p, byteorder="LITTLE"),
    "byteorder with a newline": lambda p: save_zip_checkpoint({"w": FLOATS}, p, byteorder="little\n"),
    "negative zip numel": lambda p: save_zip_checkpoint(_raw(0, (2,), (1,), numel=-1), p),
    "zip storage longer than its numel": lambda p: save_zip_checkpoint(_raw(0, (2,), (1,), numel=4), p),
    "legacy numel -1": lambda p: save_legacy_checkpoint({"w": FLOATS}, p, written_numel={"0": -1}),
    "legacy numel disagrees": lambda p: save_legacy_checkpoint({"w": FLOATS}, p, written_numel={"0": 4}),
    "duplicated zip member": _duplicate_storage,
}


def _load_measured(path: Path):
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(CheckpointError) as refused:
            load_pth(path)
        return refused.value, time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_crafted_checkpoint_is_refused_quickly_within_the_memory_bound(kind, tmp_path):
    path = CRAFTED[kind](tmp_path / "crafted.pth")
    error, seconds, peak = _load_measured(path)
    size = path.stat().st_size
    assert type(error) in (CheckpointError, UnsafeCheckpointError)
    assert str(path) in str(error)
    assert seconds < 5, f"{kind}: {seconds:.1f} s"
    # everything the reader allocated (tensor data, zip members, pickle objects) within the budget
    assert peak <= EXPANSION * size + SLACK_BYTES + (4 << 20), f"{kind}: peak {peak:,} B for a {size:,} B file"


def test_the_budget_is_checked_before_allocating(tmp_path):
    """A legitimate 400 kB tensor, read with a budget just below and just above what it needs."""
    path = save_zip_checkpoint({"w": np.ones(100_000, np.float32)}, tmp_path / "ok.pth")
    with pytest.raises(CheckpointError, match="max_bytes"):
        load_pth(path, max_bytes=500_000)  # member bytes (400 kB) + the tensor (400 kB) do not fit
    np.testing.assert_array_equal(load_pth(path, max_bytes=900_000)["w"], np.ones(100_000, np.float32))


def test_extents_at_the_edges_of_the_storage_are_read_exactly(tmp_path):
    """Negative strides, zero strides and the last element are legitimate when they stay inside."""
    cases = {
        "reversed": ((9, (10,), (-1,)), FLOATS[::-1]),
        "broadcast": ((2, (3, 2), (0, 1)), np.array([[2, 3]] * 3, np.float32)),
        "last": ((9, (), ()), np.float32(9)),
        "empty past the end": ((10, (0,), (1,)), np.zeros(0, np.float32)),
        "size-1 dimension with a huge stride": ((4, (1, 2), (2**62, 1)), np.array([[4, 5]], np.float32)),
        "transposed": ((0, (2, 5), (1, 2)), FLOATS.reshape(5, 2).T),
    }
    for name, ((offset, size, stride), expected) in cases.items():
        path = save_zip_checkpoint(_raw(offset, size, stride), tmp_path / f"{name}.pth")
        np.testing.assert_array_equal(load_pth(path)["w"], expected, err_msg=name)


def test_shared_tensors_stay_shared_and_are_read_once(tmp_path):
    """Tied weights (one tensor under two names) load as one array; the legacy format agrees."""
    tensor = RawTensor("s", FLOATS, 0, (10,), (1,))
    for save in (save_zip_checkpoint, save_legacy_checkpoint):
        loaded = load_pth(save({"a": tensor, "b": tensor, "c": [tensor, (tensor,)]}, tmp_path / "tied.pth"))
        assert loaded["a"] is loaded["b"] is loaded["c"][0] is loaded["c"][1][0]
        np.testing.assert_array_equal(loaded["a"], FLOATS)


def test_big_endian_storages_are_read_as_big_endian(tmp_path):
    path = save_zip_checkpoint({"w": FLOATS, "h": FLOATS.astype(np.float16)}, tmp_path / "big.pth", byteorder="big")
    loaded = load_pth(path)
    np.testing.assert_array_equal(loaded["w"], FLOATS)
    np.testing.assert_array_equal(loaded["h"], FLOATS.astype(np.float16))


def test_pickle_cannot_rewrite_the_readers_objects(tmp_path):
    """BUILD (the opcode that sets attributes) on a rebuilt tensor could move its offset past the
    extent check; it is refused."""
    path = save_zip_checkpoint(
        {"w": RawTensor("s", FLOATS, 0, (2,), (1,), state={"offset": -5})}, tmp_path / "build.pth"
    )
    with pytest.raises(UnsafeCheckpointError, match="set attributes of a PendingTensor"):
        load_pth(path)


@pytest.mark.parametrize("save", [save_zip_checkpoint, save_legacy_checkpoint], ids=["zip", "legacy"])
def test_valid_checkpoints_pass_the_fuzzing_invariants(save, tmp_path):
    path = save(
        {
            "state_dict": {
                "conv.weight": np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype("f4"),
                "bn.num_batches_tracked": np.array(7),
            },
            "epoch": 3,
        },
        tmp_path / "ok.pth",
    )
    loaded = check_load(path.read_bytes())
    assert loaded["epoch"] == 3 and loaded["state_dict"]["conv.weight"].shape == (4, 3, 3, 3)
