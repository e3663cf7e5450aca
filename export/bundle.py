"""The deployable bundle (``docs/bundle_format.md``): ``model.tflite`` + ``labels.txt`` +
``model_info.json`` (+ ``golden/`` for the cross-language check), and :func:`preprocess`, the reference
implementation of the input rules that the Android app reproduces."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dynzoo.logs import native_stderr_quiet

FORMAT_VERSION = 1
DEFAULT_RESIZE = {"method": "bilinear", "resize_shorter": 256, "crop": "center"}
GOLDEN_IMAGE_SIZE = (45, 61)  # (height, width): deliberately not square and not a model size
TOP_K = 5


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tensor_io_info(flatbuffer: bytes) -> dict[str, Any]:
    """Shapes, dtypes and quantization (``{"scale", "zero_point"}`` or None) of the model's first input
    and output, read from the flatbuffer by the LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    with native_stderr_quiet():  # the delegate's "Created … XNNPACK delegate" line
        interpreter = Interpreter(model_content=flatbuffer)

    def describe(detail):
        scale, zero_point = detail["quantization"]
        quant = None if scale == 0.0 else {"scale": float(scale), "zero_point": int(zero_point)}
        return {
            "shape": [int(d) for d in detail["shape"]],
            "dtype": np.dtype(detail["dtype"]).name,
            "quantization": quant,
        }

    return {
        "input": describe(interpreter.get_input_details()[0]),
        "output": describe(interpreter.get_output_details()[0]),
    }


def make_model_info(
    flatbuffer: bytes,
    *,
    name: str,
    source_model: str,
    mode: str,
    preprocessing_in_model: bool,
    mean: Sequence[float],
    std: Sequence[float],
    output_activation: str,
    resize: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``model_info.json`` content for ``flatbuffer`` (fields as in ``docs/bundle_format.md``)."""
    from dynzoo import __version__

    if output_activation not in ("softmax", "none"):
        raise ValueError(f"`output_activation` must be 'softmax' or 'none', got {output_activation!r}.")
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise ValueError(f"`mean` and `std` must hold 3 values (std > 0), got {mean!r} and {std!r}.")
    io = tensor_io_info(flatbuffer)
    _, height, width, channels = io["input"]["shape"]
    if resize is None:
        resize = {**DEFAULT_RESIZE, "resize_shorter": round(min(height, width) * 256 / 224)}
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "source_model": source_model,
        "dynzoo_version": __version__,
        "mode": mode,
        "tflite_sha256": sha256_hex(flatbuffer),
        "input": {
            "height": height,
            "width": width,
            "channels": channels,
            "layout": "NHWC",
            "color_order": "RGB",
            "dtype": io["input"]["dtype"],
            "preprocessing_in_model": bool(preprocessing_in_model),
            "mean": [float(m) for m in mean],
            "std": [float(s) for s in std],
            "resize": dict(resize),
            "quantization": io["input"]["quantization"],
        },
        "output": {
            "num_classes": int(io["output"]["shape"][-1]),
            "dtype": io["output"]["dtype"],
            "activation": output_activation,
            "quantization": io["output"]["quantization"],
        },
    }


def resize_and_crop(image: np.ndarray, model_info: dict[str, Any]) -> np.ndarray:
    """Rule 1: bilinear resize of the shorter side to ``resize_shorter`` (half-pixel centres, no
    antialiasing), then the centre ``height × width`` crop. Returns float32 (H, W, 3) in [0, 255]."""
    import tensorflow as tf

    spec = model_info["input"]
    height, width = spec["height"], spec["width"]
    shorter = spec["resize"]["resize_shorter"]
    h, w = image.shape[:2]
    if h <= w:
        new_h, new_w = shorter, int(np.floor(w * shorter / h + 0.5))
    else:
        new_h, new_w = int(np.floor(h * shorter / w + 0.5)), shorter
    if new_h < height or new_w < width:
        raise ValueError(f"`model_info`: resize_shorter={shorter} is smaller than the {height}×{width} crop.")
    resized = tf.image.resize(image.astype("float32"), (new_h, new_w), method="bilinear", antialias=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized.numpy()[top : top + height, left : left + width]


def preprocess(image_uint8_hwc: np.ndarray, model_info: dict[str, Any]) -> np.ndarray:
    """The model's input tensor (1, H, W, 3) for an RGB uint8 image, by the rules of the bundle format:
    resize + centre crop, normalise (unless the model does it), quantize (int8/uint8 inputs)."""
    image = np.asarray(image_uint8_hwc)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"`image_uint8_hwc` must be a uint8 (height, width, 3) RGB array, got {image.dtype} {image.shape}."
        )
    spec = model_info["input"]
    v = resize_and_crop(image, model_info)
    if not spec["preprocessing_in_model"]:
        v = (v / 255.0 - np.asarray(spec["mean"], "float32")) / np.asarray(spec["std"], "float32")
    dtype = np.dtype(spec["dtype"])
    if dtype == np.float32:
        return v[None].astype("float32")
    q = spec["quantization"]
    scaled = v.astype("float64") / q["scale"]
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)  # half away from zero
    info = np.iinfo(dtype)
    return np.clip(rounded + q["zero_point"], info.min, info.max).astype(dtype)[None]


def scores(raw_output: np.ndarray, model_info: dict[str, Any]) -> np.ndarray:
    """Rule 4: class scores from the model's raw output (dequantized; softmaxed when the model outputs
    logits)."""
    out = model_info["output"]
    values = np.asarray(raw_output, "float64")
    if out["quantization"] is not None:
        values = (values - out["quantization"]["zero_point"]) * out["quantization"]["scale"]
    if out["activation"] == "none":
        values = np.exp(values - values.max(axis=-1, keepdims=True))
        values /= values.sum(axis=-1, keepdims=True)
    return values


def golden_image(size: tuple[int, int] = GOLDEN_IMAGE_SIZE) -> np.ndarray:
    """A deterministic RGB uint8 test image: a handwritten digit from the offline test split on a
    coloured, non-square canvas (so resize, crop and channel order all matter)."""
    import tensorflow as tf

    from dynzoo.data import digits_arrays

    height, width = size
    digits, _ = digits_arrays("test", 32)
    digit = tf.image.resize(digits[0].astype("float32"), (height, height), method="bilinear").numpy()
    rows, cols = np.mgrid[0:height, 0:width]
    canvas = np.stack(
        [cols * 255.0 / (width - 1), rows * 255.0 / (height - 1), np.full((height, width), 96.0)], axis=-1
    )
    left = (width - height) // 2
    canvas[:, left : left + height] = np.maximum(canvas[:, left : left + height] * 0.3, digit)
    return np.clip(np.round(canvas), 0, 255).astype("uint8")


def write_bundle(
    directory: str | os.PathLike,
    flatbuffer: bytes,
    *,
    labels: Sequence[str],
    source_model: str,
    mode: str,
    preprocessing_in_model: bool,
    mean: Sequence[float],
    std: Sequence[float],
    output_activation: str,
    name: str | None = None,
    resize: dict[str, Any] | None = None,
    golden: bool = False,
    image: np.ndarray | None = None,
) -> Path:
    """Write a bundle folder: ``model.tflite``, ``labels.txt``, ``model_info.json``; with ``golden``, also
    ``golden/`` (``image.png``, ``input.bin``, ``output.bin``, ``golden.json``) computed by
    :func:`preprocess` and the LiteRT interpreter (XNNPACK off, so the reference is deterministic).

    Args:
        directory: the bundle folder. It is written beside, then swapped into place, so that a bundle
            that existed is replaced whole (no file of the previous export is left behind) and a
            killed export leaves the old bundle or the new one.
        flatbuffer: the ``.tflite`` model (batch 1, NHWC RGB input).
        labels: one label per class, as many as the model's outputs.
        source_model: registered name of the Keras model it came from.
        mode: the export mode (``float32``, ``int8`` …).
        preprocessing_in_model: True when the model takes raw RGB in [0, 255].
        mean, std: per-channel normalisation of RGB in [0, 1] (applied inside the model when
            ``preprocessing_in_model``).
        output_activation: ``"softmax"`` (the output is probabilities) or ``"none"`` (logits).
        name: bundle name (default: the folder name).
        resize: the resize rule; default: shorter side to ``round(size·256/224)``, centre crop.
        golden: also write the golden files.
        image: the golden image (uint8 RGB HWC); default :func:`golden_image`.

    Returns:
        the bundle folder.
    """
    directory = Path(directory)
    info = make_model_info(
        flatbuffer,
        name=name or directory.name,
        source_model=source_model,
        mode=mode,
        preprocessing_in_model=preprocessing_in_model,
        mean=mean,
        std=std,
        output_activation=output_activation,
        resize=resize,
    )
    labels = [str(label) for label in labels]
    if len(labels) != info["output"]["num_classes"]:
        raise ValueError(
            f"`labels` has {len(labels)} entries but the model has {info['output']['num_classes']} outputs."
        )
    if any("\n" in label for label in labels):
        raise ValueError("`labels` must not contain line breaks.")
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"the bundle folder {os.fspath(directory)!r} is a file.")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.staging-"))
    try:
        (staging / "model.tflite").write_bytes(flatbuffer)
        (staging / "labels.txt").write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
        (staging / "model_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if golden:
            write_golden(staging, flatbuffer, info, golden_image() if image is None else image)
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the bundle from other users
        _swap_into_place(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # the staged files, or the previous bundle after a swap
    return directory


def _swap_into_place(staging: Path, directory: Path) -> None:
    """Make ``staging`` the bundle ``directory`` in one step: a process killed at any moment leaves the
    old bundle or the new one, never a mix. Linux exchanges the two folders atomically (``renameat2``
    with ``RENAME_EXCHANGE``); elsewhere the old folder is renamed away first, a short window in which
    ``directory`` is missing. Afterwards ``staging`` holds the previous bundle, if there was one."""
    if not directory.exists():
        os.rename(staging, directory)
        return
    if _exchange(staging, directory):
        return
    aside = staging.with_name(staging.name + "-previous")
    os.rename(directory, aside)
    os.rename(staging, directory)
    os.rename(aside, staging)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux ``renameat2``); False where that is not available."""
    if sys.platform != "linux":
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL):  # an old kernel or a file system without it
        return False
    raise OSError(ctypes.get_errno(), f"cannot swap {os.fspath(a)!r} into {os.fspath(b)!r}")


def write_golden(directory: Path, flatbuffer: bytes, info: dict[str, Any], image: np.ndarray) -> None:
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    x = preprocess(image, info)
    interpreter = Interpreter(
        model_content=flatbuffer,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()
    probabilities = scores(y, info)[0]
    top = np.argsort(-probabilities, kind="stable")[:TOP_K]
    folder = directory / "golden"
    folder.mkdir(exist_ok=True)
    (folder / "image.png").write_bytes(tf.io.encode_png(image).numpy())
    (folder / "input.bin").write_bytes(x.astype(x.dtype.newbyteorder("<")).tobytes())
    (folder / "output.bin").write_bytes(y.astype(y.dtype.newbyteorder("<")).tobytes())
    golden = {
        "tflite_sha256": info["tflite_sha256"],  # the model these files were computed with
        "input_shape": list(x.shape),
        "input_dtype": x.dtype.name,
        "output_shape": list(y.shape),
        "output_dtype": y.dtype.name,
        "top_k": [[int(c), float(probabilities[c])] for c in top],
    }
    (folder / "golden.json").write_text(json.dumps(golden, indent=2) + "\n", encoding="utf-8")


def read_bundle(directory: str | os.PathLike) -> tuple[bytes, list[str], dict[str, Any]]:
    """(flatbuffer, labels, model_info) of a bundle folder, after the checks the JVM core's ``Bundle``
    makes: every file present, ``model_info.json`` valid JSON with every field of the right type (mean
    and std three numbers, std > 0), ``model.tflite`` matching its ``tflite_sha256``, one label per
    class, and ``golden/`` (when present) computed for this model. Raises ``ValueError`` naming the
    bundle, the file and the field."""
    directory = Path(directory)

    def fail(file: str, problem: str) -> ValueError:
        return ValueError(f"bundle {os.fspath(directory)!r}: {file}: {problem}")

    def read(name: str) -> bytes:
        try:
            return (directory / name).read_bytes()
        except FileNotFoundError:
            raise fail(name, "missing") from None
        except OSError as e:
            raise fail(name, e.strerror or str(e)) from None

    def load_json(name: str) -> dict[str, Any]:
        try:
            value = json.loads(read(name).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise fail(name, f"invalid JSON ({e})") from None
        if not isinstance(value, dict):
            raise fail(name, "must hold a JSON object")
        return value

    flatbuffer = read("model.tflite")
    info = load_json("model_info.json")
    for field, test, allowed in _INFO_FIELDS:
        value = info
        for key in field.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if not test(value):
            raise fail("model_info.json", f"`{field}` must be {allowed}, got {value!r}")
    if sha256_hex(flatbuffer) != info["tflite_sha256"].lower():
        raise fail(
            "model.tflite",
            f"sha256 is {sha256_hex(flatbuffer)} but model_info.json expects "
            f"{info['tflite_sha256']} (the files come from different exports)",
        )
    try:
        labels = read("labels.txt").decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise fail("labels.txt", "is not UTF-8 text") from None
    if len(labels) != info["output"]["num_classes"]:
        raise fail(
            "labels.txt",
            f"has {len(labels)} labels but model_info.json says output.num_classes = {info['output']['num_classes']}",
        )
    if (directory / "golden").exists():
        golden = load_json("golden/golden.json")
        if golden.get("tflite_sha256") != info["tflite_sha256"]:
            raise fail(
                "golden/golden.json",
                f"was computed for the model {golden.get('tflite_sha256')!r}, not this one ({info['tflite_sha256']})",
            )
    return flatbuffer, labels, info


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers(value: Any, count: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == count
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


# (field, test, what is allowed): the fields that readers of a bundle rely on.
_INFO_FIELDS = (
    ("format_version", lambda v: v == FORMAT_VERSION, f"{FORMAT_VERSION}"),
    (
        "tflite_sha256",
        lambda v: isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdefABCDEF" for c in v),
        "64 hexadecimal digits",
    ),
    ("input.height", lambda v: _is_int(v) and v > 0, "a positive integer"),
    ("input.width", lambda v: _is_int(v) and v > 0, "a positive integer"),
    ("input.channels", lambda v: v == 3, "3"),
    ("input.dtype", lambda v: v in ("float32", "int8", "uint8"), "float32, int8 or uint8"),
    ("input.preprocessing_in_model", lambda v: isinstance(v, bool), "true or false"),
    ("input.mean", lambda v: _numbers(v, 3), "three numbers"),
    ("input.std", lambda v: _numbers(v, 3) and all(x > 0 for x in v), "three numbers > 0"),
    ("input.resize", lambda v: isinstance(v, dict), "an object"),
    ("output.num_classes", lambda v: _is_int(v) and v > 0, "a positive integer"),
    ("output.dtype", lambda v: v in ("float32", "int8", "uint8"), "float32, int8 or uint8"),
    ("output.activation", lambda v: v in ("softmax", "none"), "softmax or none"),
)
