"""keras.applications' utilities for dynzoo models: preprocess_input, decode_predictions, load_image, and
multi-scale feature maps (feature_levels)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import dynzoo
from dynzoo.applications import imagenet_classes

RNG = np.random.default_rng(0)


def test_the_class_index_is_imagenet_1k_in_output_order():
    classes = imagenet_classes()
    assert len(classes) == 1000 and len({wnid for wnid, _ in classes}) == 1000
    assert [wnid for wnid, _ in classes] == sorted(wnid for wnid, _ in classes)  # ILSVRC-2012's order
    assert classes[0] == ("n01440764", "tench") and classes[999] == ("n15075141", "toilet_tissue")


@pytest.mark.parametrize(
    "index, wnid, name",
    [(386, "n02504458", "African_elephant"), (1, "n01443537", "goldfish"), (817, "n04285008", "sports_car")],
)
def test_decode_predictions_names_the_class_of_a_one_hot_vector(index, wnid, name):
    preds = np.zeros((2, 1000), "float32")
    preds[0, index] = 1.0
    preds[1] = np.linspace(0, 1, 1000)  # the highest scores are the last classes
    decoded = dynzoo.decode_predictions(keras.ops.convert_to_tensor(preds), top=3)
    assert decoded[0][0] == (wnid, name, 1.0) and len(decoded[0]) == 3
    assert [entry[1] for entry in decoded[1]] == ["toilet_tissue", "ear", "bolete"]
    assert [entry[2] for entry in decoded[1]] == sorted((entry[2] for entry in decoded[1]), reverse=True)


@pytest.mark.parametrize(
    "preds, top, message",
    [
        (np.zeros((1, 10)), 5, r"shape \(N, 1000\)"),
        (np.zeros(1000), 5, r"shape \(N, 1000\)"),
        (np.zeros((1, 1000)), 0, "`top` must be an integer in"),
        (np.zeros((1, 1000)), 2.5, "`top` must be an integer in"),
    ],
)
def test_decode_predictions_refuses_what_is_not_imagenet_predictions(preds, top, message):
    with pytest.raises(ValueError, match=message):
        dynzoo.decode_predictions(preds, top=top)


# The families with pretrained ImageNet weights (zoo_configs/weights.json): MicroNet, DCD on MobileNetV2
# and on ResNet.
@pytest.mark.parametrize("name", ["micronet_m0", "dcd_mobilenetv2_100", "dcd_resnet50"])
def test_preprocess_input_then_the_model_without_preprocessing_equals_the_model_with_it(name):
    with_it = dynzoo.create_model(name, input_shape=(64, 64, 3))
    without = dynzoo.create_model(name, input_shape=(64, 64, 3), include_preprocessing=False)
    without.set_weights(with_it.get_weights())
    images = RNG.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    expected = np.asarray(with_it(images))
    got = np.asarray(without(dynzoo.preprocess_input(images, model=name)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # a built model that includes its preprocessing gets the images unchanged; one without, normalised
    np.testing.assert_array_equal(dynzoo.preprocess_input(images, model=with_it), images)
    np.testing.assert_array_equal(
        dynzoo.preprocess_input(images, model=without), dynzoo.preprocess_input(images, model=name)
    )


def test_preprocess_input_is_the_imagenet_normalisation_for_arrays_and_tensors():
    pixel = np.array([[0.485 * 255, 0.456 * 255, 0.406 * 255], [255, 255, 255]], "float32")
    expected = np.array([[0, 0, 0], [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]], "float32")
    np.testing.assert_allclose(dynzoo.preprocess_input(pixel), expected, atol=1e-6)
    tensor = dynzoo.preprocess_input(tf.constant(pixel.astype("uint8")))
    assert keras.ops.is_tensor(tensor) and tensor.dtype == tf.float32
    np.testing.assert_allclose(tensor.numpy(), dynzoo.preprocess_input(pixel.astype("uint8")), atol=1e-6)
    with pytest.raises(ValueError, match=r"`x` must be RGB images with 3 channels last"):
        dynzoo.preprocess_input(np.zeros((2, 8, 8, 4)))
    with pytest.raises(ValueError, match="unknown model 'micronet_m9'"):
        dynzoo.preprocess_input(pixel, model="micronet_m9")


def _write_png(path, pixels: np.ndarray) -> None:
    tf.io.write_file(str(path), tf.io.encode_png(pixels))


def test_load_image_resizes_the_shorter_side_and_crops_the_centre(tmp_path):
    # 256 pixels high, 512 wide: the shorter side is already 256, so the image is the 224 crop's pixels
    pixels = RNG.integers(0, 256, (256, 512, 3), dtype=np.uint8)
    _write_png(tmp_path / "wide.png", pixels)
    image = dynzoo.load_image(tmp_path / "wide.png", model="micronet_m0")
    assert image.shape == (224, 224, 3) and image.dtype == np.float32
    np.testing.assert_array_equal(image, pixels[16:240, 144:368])
    # half the size: upsampled to 256 × 512 first, same crop window; a constant image stays constant
    _write_png(tmp_path / "grey.png", np.full((100, 60, 1), 77, np.uint8))
    grey = dynzoo.load_image(tmp_path / "grey.png", size=96)
    assert grey.shape == (96, 96, 3) and np.all(grey == 77.0)


def test_load_image_names_a_bad_file(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"`path`: '.*notes.png' not a"):
        dynzoo.load_image(tmp_path / "notes.png")
    _write_png(tmp_path / "cut.png", np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:60])
    with pytest.raises(ValueError, match=r"cut.png' does not decode"):
        dynzoo.load_image(tmp_path / "cut.png")
    with pytest.raises(ValueError, match="`size` must be a positive integer"):
        dynzoo.load_image(tmp_path / "cut.png", size=0)


# One model per family and stem: level L is stride 2^L (ImageNet stems reach 32; CIFAR stems start at
# stride 1 or 2 and end at 4 to 16).
FEATURE_CHANNELS = {
    "micronet_m0": {1: 4, 2: 8, 3: 12, 4: 32, 5: 384},
    "mobilenetv2_100": {1: 16, 2: 24, 3: 32, 4: 96, 5: 1280},
    "dcd_mobilenetv2_050": {1: 8, 2: 16, 3: 16, 4: 48, 5: 1280},
    "resnet18": {1: 64, 2: 64, 3: 128, 4: 256, 5: 512},
    "cdb_resnet18": {1: 64, 2: 64, 3: 128, 4: 256, 5: 512},
    "cdb_resnet10_cifar": {1: 32, 2: 64, 3: 128, 4: 256},  # width 0.5; the CIFAR stem pools 2×2
    "ddw_resnet18": {1: 64, 2: 64, 3: 128, 4: 256, 5: 512},
    "ddn_mobilenetv2_035_2x": {1: 8, 2: 8, 3: 16, 4: 32, 5: 1280},
    "drnet_s": {1: 4 * 30, 2: 4 * 60},  # four nodes of C = 15 doubled at each reduction; stride 1 is level 0
    "drt_resnet50": {1: 64, 2: 256, 3: 512, 4: 1024, 5: 2048},
}


@pytest.mark.parametrize("name", sorted(FEATURE_CHANNELS))
def test_feature_levels_have_their_strides_and_channels(name):
    levels = dynzoo.feature_levels(name)
    assert {level: info["channels"] for level, info in levels.items()} == FEATURE_CHANNELS[name]
    assert all(info["stride"] == 2**level for level, info in levels.items())
    wanted = tuple(level for level in (2, 3, 4, 5) if level in levels)
    model = dynzoo.create_model(name, include_top=False, input_shape=(None, None, 3), feature_levels=wanted)
    height, width = 96, 72
    image = RNG.uniform(0, 255, (1, height, width, 3)).astype("float32")
    inputs = [image, np.zeros((1, model.inputs[1].shape[-1]), "float32")] if len(model.inputs) > 1 else image
    maps = model(inputs)
    assert sorted(maps) == [f"level_{level}" for level in wanted]
    for level in wanted:
        stride = 2**level
        expected = (1, math.ceil(height / stride), math.ceil(width / stride), FEATURE_CHANNELS[name][level])
        assert tuple(maps[f"level_{level}"].shape) == expected, (name, level)


def test_feature_levels_refuse_a_top_and_missing_levels():
    with pytest.raises(ValueError, match="`feature_levels` needs `include_top=False`"):
        dynzoo.create_model("micronet_m0", feature_levels=(2, 3))
    with pytest.raises(ValueError, match=r"no level \[6\].*its levels are \[1, 2, 3, 4, 5\]"):
        dynzoo.create_model("micronet_m0", include_top=False, feature_levels=(5, 6))
    with pytest.raises(ValueError, match="must be a sequence of levels"):
        dynzoo.create_model("micronet_m0", include_top=False, feature_levels="2345")


def test_a_feature_model_round_trips_through_a_keras_file(tmp_path):
    model = dynzoo.create_model("micronet_m0", include_top=False, input_shape=(64, 64, 3), feature_levels=(3, 5))
    image = RNG.uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    model.save(tmp_path / "features.keras")
    loaded = dynzoo.load_model(tmp_path / "features.keras")
    for key, value in model(image).items():
        np.testing.assert_array_equal(np.asarray(loaded(image)[key]), np.asarray(value))
