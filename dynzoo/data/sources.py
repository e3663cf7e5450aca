"""Where images come from: the offline digits, a folder of images, or a TensorFlow Datasets name.

A :class:`Source` is one split of a dataset in a fixed order. It yields ``(image, label)`` pairs, the
image either decoded (uint8, H×W×3) or still encoded (JPEG/PNG/… bytes, so that the training
pipeline can decode only the crop it keeps). Every check that can fail (unknown name, empty folder,
unreadable file, missing TFDS data) runs when the source is opened, before any training starts.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIGITS = "digits"
FOLDER = "folder"
# Magic numbers of the formats `tf.io.decode_image` reads.
IMAGE_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
# Folders of up to this many images are decoded once, in full, when opened (about 1 ms a small JPEG,
# spread over the cores); larger ones only by the pipeline, unless `check_images=True`.
CHECK_IMAGES_LIMIT = 20_000
# Which TFDS split plays "test" (the papers report ImageNet's validation split).
TEST_SPLIT_NAMES = ("test", "validation")


@dataclass(frozen=True)
class Source:
    """One split of a dataset.

    Attributes:
        name: the dataset name (``digits``, ``folder``, a TFDS name).
        split: ``train`` or ``test``.
        class_names: the label of each class index.
        num_examples: number of examples in the split.
        encoded: the images arrive as encoded bytes (decode in the pipeline) rather than uint8 arrays.
        random_access: ``examples(order)`` can read the examples in any order (arrays, files); otherwise
            the source is a stream that the pipeline shuffles with a buffer.
        examples: ``examples(order)`` → ``tf.data.Dataset`` of ``(image, label int32)``: with
            ``random_access``, ``order`` is an int64 tensor of example indices (a permutation);
            otherwise ``order`` is ignored and the stored order is returned.
        default_crop_fraction: the evaluation centre-crop fraction that suits the images (0.875 as the
            papers for natural photos; 1.0 for small, centred images such as digits and CIFAR).
        files: the image files, for sources read from a folder.
        skipped: the files left out because they do not decode (``skip_bad_images``).
    """

    name: str
    split: str
    class_names: tuple[str, ...]
    num_examples: int
    encoded: bool
    random_access: bool
    examples: Callable
    default_crop_fraction: float = 0.875
    files: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def open_source(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    image_size: int = 224,
    manual_dir: str | os.PathLike | None = None,
    check_images: bool | None = None,
    skip_bad_images: bool = False,
) -> Source:
    """Open ``split`` (``"train"`` or ``"test"``) of the dataset ``name``.

    ``name`` is ``"digits"`` (offline, scikit-learn's handwritten digits resized to ``image_size``),
    ``"folder"`` (``data_dir/<split>/<class>/<image>``; ``test`` may also be named ``val`` or
    ``validation``) or a TensorFlow Datasets name (``imagenet2012``, ``cifar10``, ``cifar100``,
    ``imagenette`` …) read from ``data_dir``; ``imagenet2012`` is prepared from the archives in
    ``manual_dir`` (default ``data_dir/downloads/manual``) the first time. Raises ``ValueError``
    naming the problem before any data is read in bulk.

    For folders, ``check_images`` decodes every image once when the source is opened (default: for
    folders of up to :data:`CHECK_IMAGES_LIMIT` images) and names each one that does not decode;
    ``skip_bad_images`` leaves those out instead (listed in ``Source.skipped``).
    """
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}.")
    if not isinstance(name, str) or not name:
        raise ValueError(f"`dataset` must be a non-empty name, got {name!r}.")
    if name == DIGITS:
        return _digits_source(split, image_size)
    if name == FOLDER:
        if data_dir is None:
            raise ValueError("`data_dir` is required for the 'folder' dataset (data_dir/<split>/<class>/<image>).")
        return _folder_source(Path(data_dir), split, check_images, skip_bad_images)
    return _tfds_source(name, split, data_dir, manual_dir)


def _digits_source(split: str, image_size: int) -> Source:
    import tensorflow as tf

    from dynzoo.data.digits import DIGITS_LABELS, digits_arrays

    images, labels = digits_arrays(split, image_size)

    def examples(order):
        images_t, labels_t = tf.constant(images), tf.constant(labels)
        return tf.data.Dataset.from_tensor_slices(order).map(lambda i: (tf.gather(images_t, i), tf.gather(labels_t, i)))

    return Source(
        DIGITS,
        split,
        DIGITS_LABELS,
        len(labels),
        encoded=False,
        random_access=True,
        examples=examples,
        default_crop_fraction=1.0,
    )


def _folder_split_dir(root: Path, split: str) -> Path:
    names = ("train",) if split == "train" else ("test", "val", "validation")
    for candidate in names:
        if (root / candidate).is_dir():
            return root / candidate
    raise ValueError(
        f"`data_dir`: {os.fspath(root)!r} has no {' or '.join(repr(n) for n in names)} "
        "sub-folder (expected data_dir/<split>/<class>/<image>)."
    )


def image_problem(path: str | os.PathLike, decode: bool = False) -> str | None:
    """Why ``path`` is not an image the pipeline can read (None if it is): unreadable, not a JPEG, PNG,
    GIF or BMP by its first bytes, or, with ``decode``, not decodable by TensorFlow in full (a truncated
    or corrupt file)."""
    try:
        with open(path, "rb") as f:
            data = f.read() if decode else f.read(8)
    except OSError as e:
        return e.strerror or str(e)
    if not any(data.startswith(sig) for sig in IMAGE_SIGNATURES):
        kinds = sorted(set(IMAGE_SIGNATURES.values()))
        return f"not a {', '.join(kinds)} image (it starts with {data[:4]!r})"
    if decode:
        import tensorflow as tf

        try:
            tf.io.decode_image(data, channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
            return f"does not decode ({e.message.splitlines()[0].strip()})"
    return None


def find_bad_images(paths: list[str], decode: bool) -> dict[str, str]:
    """``{path: problem}`` of the files among ``paths`` that :func:`image_problem` refuses, checked in
    parallel (TensorFlow's decoders release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        problems = pool.map(lambda p: image_problem(p, decode), paths)
        return {path: problem for path, problem in zip(paths, problems, strict=False) if problem is not None}


def bad_images_error(bad: dict[str, str], hint: str = "") -> ValueError:
    """One line naming the bad image files (the first five) and what is wrong with each."""
    shown = "; ".join(f"{path!r}: {problem}" for path, problem in list(bad.items())[:5])
    more = f" … and {len(bad) - 5} more" if len(bad) > 5 else ""
    kind = "unreadable image file" if len(bad) == 1 else f"{len(bad)} unreadable image files"
    return ValueError(f"{kind} {shown}{more}.{hint}")


@contextlib.contextmanager
def naming_undecodable_images(files: Sequence[str], hint: str = "") -> Iterator[None]:
    """Turn TensorFlow's decoding error inside the block (``jpeg::Uncompress failed``, which names no
    file) into one error that names the files: they are found by decoding ``files`` after the fact."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.InvalidArgumentError:
        bad = find_bad_images(list(files), decode=True)
        if not bad:
            raise
        raise bad_images_error(bad, hint) from None


def read_images(files: Sequence[str | os.PathLike], image_size: int) -> np.ndarray:
    """Decode image files and resize them to (image_size, image_size) RGB uint8."""
    import tensorflow as tf

    out = []
    for f in files:
        image = tf.io.decode_image(tf.io.read_file(str(f)), channels=3, expand_animations=False)
        out.append(tf.cast(tf.image.resize(image, (image_size, image_size)) + 0.5, tf.uint8).numpy())
    return np.stack(out) if out else np.zeros((0, image_size, image_size, 3), "uint8")


def list_image_folder(split_dir: Path) -> tuple[tuple[str, ...], list[str], np.ndarray]:
    """(class names, file paths, labels) of ``split_dir/<class>/<image>``, sorted (the files are not
    read: see :func:`find_bad_images`)."""
    if not split_dir.is_dir():
        raise ValueError(f"`data_dir`: no such folder {os.fspath(split_dir)!r}.")
    class_names = tuple(sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not class_names:
        raise ValueError(
            f"`data_dir`: {os.fspath(split_dir)!r} has no class sub-folders (expected <split>/<class>/<image>)."
        )
    paths, labels = [], []
    for label, class_name in enumerate(class_names):
        for path in sorted((split_dir / class_name).rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(os.fspath(path))
                labels.append(label)
    if not paths:
        raise ValueError(f"`data_dir`: no images ({', '.join(IMAGE_EXTENSIONS)}) under {os.fspath(split_dir)!r}.")
    return class_names, paths, np.asarray(labels, dtype="int32")


def _folder_source(root: Path, split: str, check_images: bool | None, skip_bad_images: bool) -> Source:
    import tensorflow as tf

    if not root.is_dir():
        raise ValueError(f"`data_dir`: no such folder {os.fspath(root)!r}.")
    class_names, paths, labels = list_image_folder(_folder_split_dir(root, split))
    decode = skip_bad_images or (len(paths) <= CHECK_IMAGES_LIMIT if check_images is None else check_images)
    bad = find_bad_images(paths, decode)
    if bad and not skip_bad_images:
        raise bad_images_error(
            bad, " Remove or fix them, or leave them out (`dynzoo train` and `dynzoo eval` take --skip-bad-images)."
        )
    if bad:
        keep = [i for i, path in enumerate(paths) if path not in bad]
        paths, labels = [paths[i] for i in keep], labels[keep]
        if not paths:
            raise ValueError(f"`data_dir`: none of the images under {os.fspath(root / split)!r} decodes.")
    if split == "test":  # the test classes must be the training classes, in the same order
        train_dir = root / "train"
        if train_dir.is_dir():
            train_classes = tuple(
                sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
            )
            if train_classes != class_names:
                raise ValueError(
                    f"`data_dir`: the test classes {list(class_names)} differ from the training "
                    f"classes {list(train_classes)}."
                )

    def examples(order):
        paths_t, labels_t = tf.constant(paths), tf.constant(labels)
        return tf.data.Dataset.from_tensor_slices(order).map(
            lambda i: (tf.io.read_file(tf.gather(paths_t, i)), tf.gather(labels_t, i)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    return Source(
        FOLDER,
        split,
        class_names,
        len(paths),
        encoded=True,
        random_access=True,
        examples=examples,
        files=tuple(paths),
        skipped=tuple(bad),
    )


def _tfds_source(name: str, split: str, data_dir, manual_dir) -> Source:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ValueError(
            f"unknown dataset {name!r}: the built-in datasets are {DIGITS!r} and {FOLDER!r}; "
            "TensorFlow Datasets names need `pip install dynzoo[datasets]`."
        ) from None
    known = tfds.list_builders(with_community_datasets=False)
    if name.split(":")[0].split("/")[0] not in known:
        close = difflib.get_close_matches(name, [DIGITS, FOLDER, *known], n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"unknown dataset {name!r}.{hint} Use {DIGITS!r} (offline), {FOLDER!r} with "
            "--data-dir, or a TensorFlow Datasets name."
        )
    builder = tfds.builder(name, data_dir=os.fspath(data_dir) if data_dir else None)
    info = builder.info
    if "image" not in info.features or "label" not in info.features:
        raise ValueError(f"dataset {name!r} is not an image-classification dataset (needs 'image' and 'label').")
    names = ("train",) if split == "train" else TEST_SPLIT_NAMES
    if info.splits and not any(n in info.splits for n in names):
        raise ValueError(f"dataset {name!r} has no {' or '.join(names)} split (it has {sorted(info.splits)}).")

    def read(tfds_split):
        import tensorflow as tf

        # TFDS stores images encoded: keep the bytes so the pipeline decodes only the crop it keeps.
        ds = builder.as_dataset(
            split=tfds_split, as_supervised=True, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()}
        )
        return ds.map(lambda image, label: (image, tf.cast(label, tf.int32)))

    try:
        tfds_split, records = _first_readable(read, [n for n in names if not info.splits or n in info.splits])
    except (AssertionError, ValueError, OSError):  # TFDS asserts when the data was never prepared
        if not (name.startswith("imagenet2012") or manual_dir is not None):
            raise ValueError(
                f"dataset {name!r} is not prepared under {builder.data_dir!r}; prepare it once "
                "with internet access (`tfds build` or `tfds.load`) and pass --data-dir."
            ) from None
        manual = Path(manual_dir) if manual_dir else Path(builder.data_dir_root) / "downloads" / "manual"
        if not manual.is_dir():
            raise ValueError(
                f"dataset {name!r} is not prepared under {builder.data_dir!r} and its manual "
                f"download folder {os.fspath(manual)!r} does not exist; put the archives there "
                "(see the TFDS catalogue) or pass --manual-dir."
            ) from None
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual)))
        info = builder.info
        tfds_split, records = _first_readable(read, [n for n in names if n in info.splits])
    if tfds_split in info.splits:
        num_examples = info.splits[tfds_split].num_examples
    else:  # only TFDS's mock data has no split metadata: count it
        num_examples = int(records.reduce(np.int64(0), lambda count, *_: count + 1))
    height = info.features["image"].shape[0]
    return Source(
        name,
        split,
        tuple(info.features["label"].names),
        num_examples,
        encoded=True,
        random_access=False,
        examples=lambda order: read(tfds_split),
        default_crop_fraction=1.0 if height is not None and height <= 64 else 0.875,
    )


def _first_readable(read, splits):
    """(split, dataset) of the first of ``splits`` that TFDS can read; re-raises the last failure."""
    if not splits:
        raise ValueError("no split to read")
    for index, split in enumerate(splits):
        try:
            return split, read(split)
        except (AssertionError, ValueError, OSError, KeyError):
            if index == len(splits) - 1:
                raise
