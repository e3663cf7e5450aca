"""Offline multi-domain data: the digits seen under image transforms that play the role of domains.

A domain is a sequence of named transforms applied in order (``("night", "fog")``); every transform is a
deterministic function of the images and a seeded random generator, so a domain's images are the same on
every run. Photometric transforms ("time of day", "weather") serve the domain-aware networks; appearance
transforms (inverted, coloured background, rotated, noisy) serve multi-source adaptation. Add a transform
with :func:`register_transform`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]
"""``transform(images float32 (N, S, S, 3) in [0, 255], rng) -> images float32 (N, S, S, 3)``."""

TRANSFORMS: dict[str, Transform] = {}
CLEAN = "clean"  # the name of the empty domain: the digits as they are


def register_transform(name: str, transform: Transform) -> None:
    """Make ``transform`` available to domains under ``name`` (unique, lowercase)."""
    if name != name.lower() or name in TRANSFORMS:
        raise ValueError(f"transform name {name!r} must be lowercase and unique.")
    TRANSFORMS[name] = transform


def check_domain(domain: str | Sequence[str]) -> tuple[str, ...]:
    """A domain as a tuple of transform names (a single name is a one-transform domain; ``()`` or
    ``"clean"`` is the digits as they are); a ValueError names any unknown transform and lists the known ones."""
    steps = () if domain == CLEAN else (domain,) if isinstance(domain, str) else tuple(domain)
    for step in steps:
        if step not in TRANSFORMS:
            raise ValueError(f"`domain`: unknown transform {step!r}; known: {sorted(TRANSFORMS)}.")
    return steps


def apply_domain(images: np.ndarray, domain: str | Sequence[str], seed: int = 0) -> np.ndarray:
    """``images`` (uint8 (N, S, S, 3)) under ``domain``'s transforms, as uint8. ``seed`` fixes the random
    parts (noise, rotation angles, colours) per image order."""
    steps = check_domain(domain)
    rng = np.random.default_rng(seed)
    out = np.asarray(images, dtype="float32")
    for step in steps:
        out = TRANSFORMS[step](out, rng)
    return np.clip(np.round(out), 0, 255).astype("uint8")


def domain_digits(
    domain: str | Sequence[str], split: str = "train", image_size: int = 32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The fixed digits ``split`` (see :func:`~dynzoo.data.digits.digits_arrays`) under ``domain``:
    ``(images uint8 (N, S, S, 3), labels int32 (N,))``. Train and test draw their random parts from
    different streams of ``seed``."""
    from dynzoo.data.digits import digits_arrays

    images, labels = digits_arrays(split, image_size)
    return apply_domain(images, domain, seed=seed * 2 + (split == "test")), labels


# ---------------------------------------------------------------------------------------------------
# Transforms.


def _per_image(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    return rng.uniform(low, high, (n, 1, 1, 1)).astype("float32")


def _box_blur(images: np.ndarray, radius: int) -> np.ndarray:
    """Separable box blur with edge padding (radius pixels each side)."""
    out = images
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        size = out.shape[axis]
        out = sum(np.take(padded, range(k, k + size), axis=axis) for k in range(2 * radius + 1)) / (2 * radius + 1)
    return out


def _rotate(images: np.ndarray, rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """Rotate each image by a random angle in ±max_degrees about its centre (nearest neighbour, zeros
    outside)."""
    n, h, w, _ = images.shape
    angles = np.deg2rad(rng.uniform(-max_degrees, max_degrees, n))
    yy, xx = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    out = np.zeros_like(images)
    for i, a in enumerate(angles):
        src_y = np.round(np.cos(a) * yy - np.sin(a) * xx + (h - 1) / 2).astype(int)
        src_x = np.round(np.sin(a) * yy + np.cos(a) * xx + (w - 1) / 2).astype(int)
        inside = (src_y >= 0) & (src_y < h) & (src_x >= 0) & (src_x < w)
        out[i][inside] = images[i, src_y[inside], src_x[inside]]
    return out


register_transform("dusk", lambda x, rng: x * _per_image(rng, len(x), 0.55, 0.75))
register_transform("night", lambda x, rng: x * _per_image(rng, len(x), 0.2, 0.35) + 10.0)
register_transform("low_contrast", lambda x, rng: 128.0 + (x - 128.0) * _per_image(rng, len(x), 0.3, 0.5))
register_transform("rain", lambda x, rng: x + rng.normal(0.0, 30.0, x.shape).astype("float32"))
register_transform("blur", lambda x, rng: _box_blur(x, max(1, x.shape[1] // 16)))
register_transform("fog", lambda x, rng: x * 0.45 + _per_image(rng, len(x), 150.0, 200.0) * 0.55)
register_transform("inverted", lambda x, rng: 255.0 - x)
register_transform(
    "colour_background", lambda x, rng: x + (1.0 - x / 255.0) * rng.uniform(0, 200, (len(x), 1, 1, 3)).astype("float32")
)
register_transform("rotated", lambda x, rng: _rotate(x, rng, 30.0))
register_transform("noisy", lambda x, rng: x + rng.normal(0.0, 45.0, x.shape).astype("float32"))
