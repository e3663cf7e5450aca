"""``tf.data`` input pipelines: the papers' training augmentation and evaluation crop.

Training (thesis §4.1/§3.5.1 recipes, torchvision's ``RandomResizedCrop`` + ``RandomHorizontalFlip``):
a random crop covering ``crop_scale`` of the area with aspect ratio in ``crop_ratio``, resized to the
model's input, a random flip, and optional mixup on the batch. Evaluation: resize the shorter side to
``image_size / crop_fraction`` (256 for 224 at 0.875) and crop the centre — the bundle format's rule.

Every random choice is *stateless*: it is a function of ``(seed, epoch, position)`` only. An epoch's
batches are therefore the same whether the stream starts at step 0 or is rebuilt at step ``k`` after a
crash, which is what makes a resumed run equal an uninterrupted one. The images leave the pipeline
as float32 RGB in [0, 255] (the models normalise inside); the labels as float32 one-hot vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from dynzoo.data.sources import Source

SHUFFLE_BUFFER = 10_000  # for sources read as a stream (TFDS); array and file sources are fully permuted


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation.

    Attributes:
        crop_scale: (min, max) fraction of the image area the random crop covers (torchvision 0.08–1).
        crop_ratio: (min, max) aspect ratio of the crop (3/4–4/3).
        flip: random horizontal flip (off for digits: a mirrored digit is not a digit).
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True

    def __post_init__(self):
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"`crop_scale` must satisfy 0 < min <= max <= 1, got {self.crop_scale}.")
        lo, hi = self.crop_ratio
        if not 0.0 < lo <= hi:
            raise ValueError(f"`crop_ratio` must satisfy 0 < min <= max, got {self.crop_ratio}.")


def _seed(base, epoch, index=0, tag=0) -> tf.Tensor:
    """A stateless-op seed (shape [2], int64) unique to (base, epoch, index < 2**24, tag < 8)."""
    epoch, index = tf.cast(epoch, tf.int64), tf.cast(index, tf.int64)
    return tf.stack([tf.cast(base, tf.int64), (epoch * (1 << 24) + index) * 8 + tag])


def _decode(image: tf.Tensor, encoded: bool) -> tf.Tensor:
    if not encoded:
        return image
    return tf.io.decode_image(image, channels=3, expand_animations=False)


def _random_crop(image: tf.Tensor, encoded: bool, seed: tf.Tensor, aug: Augmentation) -> tf.Tensor:
    """A random-resized-crop window of ``image``, decoding only that window for JPEGs."""

    def window(shape):
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape,
            bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
            seed=seed,
            min_object_covered=0.0,
            aspect_ratio_range=aug.crop_ratio,
            area_range=aug.crop_scale,
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        return begin, size

    if not encoded:
        begin, size = window(tf.shape(image))
        return tf.slice(image, begin, size)

    def jpeg():  # decode_and_crop_jpeg skips the pixels outside the window: the cheap path for ImageNet
        begin, size = window(tf.image.extract_jpeg_shape(image))
        return tf.image.decode_and_crop_jpeg(image, tf.stack([begin[0], begin[1], size[0], size[1]]), channels=3)

    def other():
        decoded = tf.io.decode_image(image, channels=3, expand_animations=False)
        begin, size = window(tf.shape(decoded))
        return tf.slice(decoded, begin, size)

    return tf.cond(tf.io.is_jpeg(image), jpeg, other)


def resize_and_center_crop(
    image: tf.Tensor, image_size: int, crop_fraction: float, method: str = "bilinear"
) -> tf.Tensor:
    """Resize the shorter side to ``round(image_size / crop_fraction)`` (``method``, no antialiasing,
    longer side rounded) and crop the centre ``image_size`` square; float32 out."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    shorter = tf.round(image_size / crop_fraction)
    new_size = tf.cast(tf.round(shape * shorter / tf.reduce_min(shape)), tf.int32)
    resized = tf.image.resize(image, new_size, method=method, antialias=False)
    top = (new_size[0] - image_size) // 2
    left = (new_size[1] - image_size) // 2
    return tf.slice(resized, [top, left, 0], [image_size, image_size, 3])


def _mixup(images, labels, alpha, seeds):
    """Official DCD mixup: one λ ~ Beta(α, α) per batch, partners from a random permutation of the
    batch; mixing the one-hot targets equals the λ-mix of the two cross-entropies."""
    safe_alpha = tf.maximum(alpha, 1e-3)  # α = 0 (start of the ramp) means no mixing
    g1 = tf.random.stateless_gamma([], seed=seeds[0], alpha=safe_alpha)
    g2 = tf.random.stateless_gamma([], seed=seeds[1], alpha=safe_alpha)
    lam = tf.where(alpha > 0, g1 / (g1 + g2), 1.0)
    partner = tf.argsort(tf.random.stateless_uniform([tf.shape(images)[0]], seed=seeds[2]))
    return (
        lam * images + (1 - lam) * tf.gather(images, partner),
        lam * labels + (1 - lam) * tf.gather(labels, partner),
    )


def train_dataset(
    source: Source,
    image_size: int,
    batch_size: int,
    *,
    steps_per_epoch: int,
    start_step: int = 0,
    seed: int = 0,
    augmentation: Augmentation = Augmentation(),
    mixup: float = 0.0,
    mixup_ramp_epochs: int = 0,
) -> tf.data.Dataset:
    """The endless training stream, epoch after epoch, starting at global step ``start_step``.

    Each epoch is a fresh permutation of the split (seeded by ``seed`` and the epoch), cut into
    ``steps_per_epoch`` batches of ``batch_size`` (the global batch). Mixup's α ramps linearly from 0
    over the first ``mixup_ramp_epochs`` epochs (DCD's official schedule), then stays at ``mixup``.
    Yields ``(images float32 (B, S, S, 3) in [0, 255], one-hot labels float32 (B, classes))``.
    """
    if steps_per_epoch < 1 or steps_per_epoch * batch_size > source.num_examples:
        raise ValueError(
            f"`steps_per_epoch` must be in [1, {source.num_examples // batch_size}] for "
            f"{source.num_examples} examples and batch {batch_size}, got {steps_per_epoch}."
        )
    n, classes = source.num_examples, source.num_classes
    # A streamed source (TFDS) is opened and shuffled here, eagerly: a tensor seed inside the traced epoch
    # function fails once a global seed is set. It reshuffles on every pass, i.e. every epoch.
    stream = (
        None
        if source.random_access
        else source.examples(None).shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    )

    def one_epoch(epoch):
        if source.random_access:
            order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=_seed(seed, epoch, 0, 7))
            examples = source.examples(order)
        else:
            examples = stream

        def augment(index, example):
            image, label = example
            crop = _random_crop(image, source.encoded, _seed(seed, epoch, index, 0), augmentation)
            image = tf.image.resize(crop, (image_size, image_size), method="bilinear", antialias=False)
            if augmentation.flip:
                image = tf.image.stateless_random_flip_left_right(image, seed=_seed(seed, epoch, index, 1))
            image.set_shape((image_size, image_size, 3))
            return image, tf.one_hot(label, classes)

        batches = (
            examples.enumerate()
            .map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch_size, drop_remainder=True)
            .take(steps_per_epoch)
        )
        if mixup > 0:
            alpha = mixup * (
                tf.minimum(1.0, tf.cast(epoch, tf.float32) / mixup_ramp_epochs) if mixup_ramp_epochs > 0 else 1.0
            )
            batches = batches.enumerate().map(
                lambda step, batch: _mixup(*batch, alpha, [_seed(seed, epoch, step, tag) for tag in (2, 3, 4)]),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
        return batches

    start_epoch, skip = divmod(start_step, steps_per_epoch)
    stream = tf.data.Dataset.counter(start_epoch).flat_map(one_epoch).skip(skip)
    return stream.prefetch(tf.data.AUTOTUNE).with_options(_options())


def eval_dataset(
    source: Source, image_size: int, batch_size: int, *, crop_fraction: float | None = None, one_hot: bool = False
) -> tf.data.Dataset:
    """The split in its stored order: resize + centre crop (``crop_fraction`` default: the source's),
    batched. Yields ``(images float32 (B, S, S, 3) in [0, 255], labels)``, the labels int32 or, with
    ``one_hot``, float32 one-hot vectors."""
    crop_fraction = source.default_crop_fraction if crop_fraction is None else crop_fraction
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"`crop_fraction` must be in (0, 1], got {crop_fraction!r}.")
    classes = source.num_classes

    def prepare(image, label):
        image = resize_and_center_crop(_decode(image, source.encoded), image_size, crop_fraction)
        return image, (tf.one_hot(label, classes) if one_hot else label)

    order = tf.range(source.num_examples, dtype=tf.int64) if source.random_access else None
    return (
        source.examples(order)
        .map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
        .with_options(_options())
    )


def _options() -> tf.data.Options:
    options = tf.data.Options()
    # Under multi-worker training every worker builds the same stream and keeps its share of each batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options
