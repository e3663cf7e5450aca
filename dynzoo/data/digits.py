"""scikit-learn's 8×8 handwritten digits as RGB images, with a fixed train/test split."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

DIGITS_LABELS = tuple(str(d) for d in range(10))
TEST_FRACTION = 0.25
SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype("uint8")  # 0…16 → 0…255
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        digits.target.astype("int32"),
        test_size=TEST_FRACTION,
        random_state=SPLIT_SEED,
        stratify=digits.target,
    )
    return {"train": (x_train, y_train), "test": (x_test, y_test)}


def digits_arrays(split: str = "train", image_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, S, S, 3) RGB in [0, 255], labels int32 (N,)) of the fixed ``split``.

    The 8×8 grey images are resized bilinearly to ``image_size`` and repeated over 3 channels. The
    split is stratified with a fixed seed: 1,347 training and 450 test images.
    """
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}.")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"`image_size` must be an integer >= 8, got {image_size!r}.")
    import tensorflow as tf

    images, labels = _split()[split]
    resized = tf.image.resize(images[..., None].astype("float32"), (image_size, image_size), method="bilinear")
    rgb = np.repeat(np.clip(np.round(resized.numpy()), 0, 255).astype("uint8"), 3, axis=-1)
    return rgb, labels.copy()
