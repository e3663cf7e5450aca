"""Input pipelines: sources (digits, image folders, TFDS through its mock), the papers' augmentation and
evaluation crop, stateless determinism (resuming at a step rebuilds the same batches), bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from dynzoo.data import (
    Augmentation,
    eval_dataset,
    open_source,
    resize_and_center_crop,
    train_dataset,
)


def _write_image(path, size, colour, fmt):
    image = np.zeros((*size, 3), "uint8") + np.asarray(colour, "uint8")
    encode = tf.io.encode_png if fmt == "png" else tf.io.encode_jpeg
    path.write_bytes(encode(tf.constant(image)).numpy())


@pytest.fixture
def image_folder(tmp_path):
    """train/{red,blue}/ (JPEG and PNG, odd sizes) and test/{red,blue}/."""
    for split, count in (("train", 6), ("test", 2)):
        for label, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                fmt = "jpg" if i % 2 else "png"
                _write_image(folder / f"{i}.{fmt}", (40 + 3 * i, 52), colour, "jpeg" if fmt == "jpg" else "png")
    return tmp_path


def test_digits_source_is_the_fixed_split():
    train, test = open_source("digits", "train", image_size=32), open_source("digits", "test", image_size=32)
    assert (train.num_examples, test.num_examples, train.num_classes) == (1347, 450, 10)
    assert test.default_crop_fraction == 1.0 and not train.encoded


def test_train_stream_shapes_and_resume_rebuilds_the_same_batches():
    source = open_source("digits", "train", image_size=32)
    kwargs = {
        "steps_per_epoch": 5,
        "seed": 3,
        "augmentation": Augmentation((0.5, 1.0), flip=False),
        "mixup": 0.4,
        "mixup_ramp_epochs": 2,
    }
    full = [b for _, b in zip(range(14), train_dataset(source, 32, 16, **kwargs), strict=False)]
    images, labels = full[0]
    assert images.shape == (16, 32, 32, 3) and labels.shape == (16, 10)
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0
    # Epoch 0: mixup's α ramps from 0, so the targets are one-hot; epoch 2: mixed (one λ per batch;
    # a sample mixed with one of its own class keeps a one-hot target).
    assert np.all(full[0][1].numpy().max(axis=1) == 1.0)
    assert len(np.unique(full[12][1].numpy().max(axis=1)[full[12][1].numpy().max(axis=1) < 1.0])) == 1
    np.testing.assert_allclose(full[12][1].numpy().sum(axis=1), 1.0, rtol=1e-6)
    # Rebuilt at step 7 (mid-epoch 1), the stream continues with exactly the same batches.
    resumed = [b for _, b in zip(range(7), train_dataset(source, 32, 16, start_step=7, **kwargs), strict=False)]
    for (a_x, a_y), (b_x, b_y) in zip(full[7:], resumed, strict=False):
        np.testing.assert_array_equal(a_x.numpy(), b_x.numpy())
        np.testing.assert_array_equal(a_y.numpy(), b_y.numpy())
    # Each epoch is a new permutation.
    assert not np.array_equal(full[0][0].numpy(), full[5][0].numpy())


def test_steps_per_epoch_must_fit_the_split():
    source = open_source("digits", "test", image_size=32)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        train_dataset(source, 32, 64, steps_per_epoch=8)  # 450 // 64 = 7


def test_eval_resize_shorter_side_then_centre_crop():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (60, 100, 3)), tf.uint8)
    out = resize_and_center_crop(image, 32, 0.875).numpy()
    # shorter side 60 → round(32 / 0.875) = 37, longer 100 → round(100·37/60) = 62; crop offsets 2 and 15
    expected = tf.image.resize(image, (37, 62), method="bilinear", antialias=False).numpy()[2:34, 15:47]
    assert out.shape == (32, 32, 3)
    np.testing.assert_array_equal(out, expected)


def test_image_folder_source_and_pipelines(image_folder):
    train = open_source("folder", "train", image_folder)
    assert train.class_names == ("blue", "red") and train.num_examples == 12 and train.encoded
    x, y = next(iter(train_dataset(train, 32, 4, steps_per_epoch=3, seed=0)))
    assert x.shape == (4, 32, 32, 3)
    # The colour survives decode → crop → resize: red images have a dominant red channel.
    red = y.numpy()[:, 1] == 1
    means = x.numpy().mean(axis=(1, 2))
    assert np.all((means[:, 0] > means[:, 2]) == red)
    test = open_source("folder", "test", image_folder)
    xs, labels = next(iter(eval_dataset(test, 32, 8)))
    assert xs.shape == (4, 32, 32, 3) and labels.numpy().tolist() == [0, 0, 1, 1]


def test_folder_errors(tmp_path, image_folder):
    with pytest.raises(ValueError, match="data_dir.*required"):
        open_source("folder", "train")
    (tmp_path / "empty" / "train" / "cats").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        open_source("folder", "train", tmp_path / "empty")
    with pytest.raises(ValueError, match="no 'test' or 'val' or 'validation' sub-folder"):
        open_source("folder", "test", tmp_path / "empty")
    (image_folder / "train" / "red" / "broken.jpg").write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="unreadable image file .*broken.jpg"):
        open_source("folder", "train", image_folder)


def test_unknown_dataset_name_suggests():
    with pytest.raises(ValueError, match="unknown dataset 'cifar_10'.*'cifar10'"):
        open_source("cifar_10", "train")
    with pytest.raises(ValueError, match="split"):
        open_source("digits", "validation")


def test_tfds_by_name_through_its_mock_and_unprepared_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        source = open_source("cifar10", "test")
        assert source.num_examples == 12 and source.num_classes == 10 and source.default_crop_fraction == 1.0
        x, y = next(iter(train_dataset(open_source("cifar10", "train"), 32, 4, steps_per_epoch=2)))
        assert x.shape == (4, 32, 32, 3) and y.shape == (4, 10)
        assert open_source("imagenette", "test").default_crop_fraction == 0.875
    with pytest.raises(ValueError, match="not prepared"):
        open_source("cifar10", "train", tmp_path)
    with pytest.raises(ValueError, match="manual download folder"):
        open_source("imagenet2012", "train", tmp_path)


def test_domains_are_deterministic_transforms_of_the_digits():
    from dynzoo.data.digits import digits_arrays
    from dynzoo.data.domains import apply_domain, domain_digits

    clean, labels = digits_arrays("test", 16)
    x, y = domain_digits(("night", "fog"), "test", 16, seed=3)
    again, _ = domain_digits(("night", "fog"), "test", 16, seed=3)
    np.testing.assert_array_equal(x, again)
    np.testing.assert_array_equal(y, labels)
    assert x.shape == clean.shape and x.dtype == np.uint8
    np.testing.assert_array_equal(domain_digits((), "test", 16)[0], clean)  # the empty domain is the clean data
    np.testing.assert_array_equal(domain_digits("clean", "test", 16)[0], clean)
    np.testing.assert_array_equal(apply_domain(clean, "inverted"), 255 - clean)
    assert x.std() < 0.3 * clean.std()  # night then fog: dim, washed-out images
    assert not np.array_equal(
        domain_digits("rain", "train", 16, seed=0)[0], domain_digits("rain", "train", 16, seed=1)[0]
    )
    rotated = apply_domain(clean, "rotated")
    assert not np.array_equal(rotated, clean) and abs(int(rotated.sum()) - int(clean.sum())) < 0.1 * clean.sum()
    with pytest.raises(ValueError, match="unknown transform 'snow'; known: .*'fog'"):
        domain_digits("snow", "test", 16)
