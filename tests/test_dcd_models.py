"""MobileNetV2 and ResNet, static / DCD / DY-Conv / CondConv: sizes against the official modules and
keras.applications, parity with the authors' code, checkpoint loading, serialization, TFLite, errors."""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
from official_parity import assert_input_sensitive, assert_parity, logits_with_bug, official_io, parity_error
from torch_format import save_zip_checkpoint

import dynzoo
from dynzoo._compat import all_layers
from dynzoo.models import mobilenetv2, resnet
from dynzoo.models.resnet import ResNetBlock
from dynzoo.weights import load_pth, state_dict_from

# measured on the authors' code: the official modules' trainable parameters and state-dict sizes
OFFICIAL = {
    "dcd_mobilenetv2_100": (5_720_028, 842),
    "dcd_mobilenetv2_050": (3_056_616, 842),
    "dcd_mobilenetv2_035": (2_267_932, 842),
    "dcd_resnet18": (14_703_332, 394),
    "dcd_resnet50": (29_835_056, 1104),
}
FIXTURES = {"dcd_mobilenetv2_050": "mobilenetv2_dcd_w0.5", "dcd_resnet18": "resnet18_dcd"}


def logits_model(name, **kwargs):
    return dynzoo.create_model(name, include_preprocessing=False, classifier_activation=None, **kwargs)


def prefixes(model, head="classifier.1."):
    module = mobilenetv2 if "mobilenetv2" in model.name else resnet
    return module.official_layer_prefixes(model, head)


def to_state_dict(model, head="classifier.1.") -> dict[str, np.ndarray]:
    """Our weights in the official PyTorch layout and names (the inverse of the converter)."""
    state = {}
    resnet_names = "resnet" in model.name

    def walk(layer, prefix):
        if hasattr(layer, "official_children"):
            for name, child in layer.official_children():
                if resnet_names:
                    name = {"conv_q": "q", "conv_p": "p"}.get(name, name)
                walk(child, f"{prefix}{name}.")
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, cin, mult = layer.kernel.shape
            state[prefix + "weight"] = layer.kernel.numpy().transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
        elif isinstance(layer, keras.layers.Conv2D):
            state[prefix + "weight"] = layer.kernel.numpy().transpose(3, 2, 0, 1)
        elif isinstance(layer, keras.layers.Dense):
            state[prefix + "weight"] = layer.kernel.numpy().T
            if layer.use_bias:
                state[prefix + "bias"] = layer.bias.numpy()
        elif isinstance(layer, keras.layers.BatchNormalization):
            for key, var in (
                ("weight", layer.gamma),
                ("bias", layer.beta),
                ("running_mean", layer.moving_mean),
                ("running_var", layer.moving_variance),
            ):
                state[prefix + key] = var.numpy()
            state[prefix + "num_batches_tracked"] = np.array(0, "int64")

    for layer, prefix in prefixes(model, head):
        walk(layer, prefix)
    return state


def randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        value = rng.normal(0, 0.1 if "kernel" in v.path else 0.3, size=v.shape)
        if "variance" in v.path:
            value = np.abs(value) + 0.5
        if "temperature" in v.path:
            value = np.ones(v.shape)
        v.assign(value.astype("float32"))


def trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.fixture(scope="module")
def default_models():
    """``dynzoo.create_model(name)`` with the default arguments, built once for the module: the size and
    key-name tests only read them."""
    return functools.cache(dynzoo.create_model)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_sizes_and_key_names_equal_the_official_modules(default_models, name):
    params, keys = OFFICIAL[name]
    model = default_models(name)
    assert trainable(model) == params
    assert dynzoo.profile(model).params == params
    state = to_state_dict(model, "classifier.0." if "resnet" in name else "classifier.1.")
    assert len(state) == keys
    examples = {  # key names of the official DCD-MobileNetV2 state dict
        "dcd_mobilenetv2_100": {
            "features.2.conv.0.fc.0.weight": (4, 64),
            "features.2.conv.6.conv_q.weight": (12, 96, 1, 1),
            "classifier.1.fc_phi.weight": (1024, 32),
            "features.17.conv.6.conv.weight": (320, 960, 1, 1),
        },
        "dcd_resnet50": {
            "layer1.0.conv1.q.weight": (8, 64, 1, 1),
            "layer4.2.conv3.conv.weight": (2048, 512, 1, 1),
            "layer1.0.downsample.0.weight": (256, 64, 1, 1),
            "classifier.0.cls.bias": (1000,),
        },
        "dcd_resnet18": {"layer2.0.conv2.q.weight": (22, 128, 1, 1), "layer2.0.conv2.fc.0.weight": (32, 512)},
    }.get(name, {})
    for key, shape in examples.items():
        assert state[key].shape == shape, key


@pytest.mark.parametrize("width, name", [(1.0, "mobilenetv2_100"), (0.5, "mobilenetv2_050"), (0.35, "mobilenetv2_035")])
def test_static_mobilenetv2_sizes_equal_keras_applications(default_models, width, name):
    ours = default_models(name)
    reference = keras.applications.MobileNetV2(alpha=width, weights=None)
    assert ours.count_params() == reference.count_params()
    assert trainable(ours) == trainable(reference)


def test_static_resnet_sizes_and_madds(default_models):
    """torchvision's ResNet-18/50 sizes; MAdds against Table 3.4 (1.81G, 0.89G)."""
    assert trainable(default_models("resnet18")) == 11_689_512
    assert trainable(default_models("resnet50")) == 25_557_032
    for name, madds in (("resnet18", 1.81e9), ("resnet10", 0.89e9), ("mobilenetv2_100", 300.0e6)):
        assert abs(dynzoo.profile(default_models(name)).madds - madds) / madds < 0.01


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_parity_with_the_official_models(official_models, name):
    """The first test to use ``official_models``: it gets the freshly loaded model, which it hands back
    trainable again for the later users."""
    model, x, expected = official_models(name)
    assert_parity(model.predict(x, verbose=0), expected)  # every sample: the dynamic branches are per sample
    assert_input_sensitive(model, x, expected)
    # the unfolded training-mode graph gives the same logits once the BNs are frozen (fine-tuning)
    flags = [(layer, layer.trainable) for layer in all_layers(model)]  # outermost first
    model.trainable = False
    try:
        assert_parity(model(x, training=True), expected)
    finally:
        for layer, flag in flags:
            layer.trainable = flag


def official_model(official_dir, name):
    """The model with the fixture's weights, the fixture's input (NHWC) and the official logits."""
    model = logits_model(name, weights=official_dir / f"{FIXTURES[name]}.pth", dropout_rate=0.0)
    return model, *official_io(official_dir, FIXTURES[name])


@pytest.fixture(scope="module")
def official_models(official_dir):
    """``official_model`` for each name, loaded once for the module."""
    return functools.cache(lambda name: official_model(official_dir, name))


@pytest.mark.parametrize(
    "bug", ["batch_mean_coefficients", "bn_mean_variance_swapped", "classifier_bias_dropped", "phi_branch_dropped"]
)
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_parity_fails_for_a_converted_model_with_a_bug(official_models, name, bug):
    """Measured: each bug moves every sample's logits by 46× (ResNet-18's classifier bias) to over 1000× the
    tolerance, or makes them non-finite (a BN variance swapped for a negative mean)."""
    model, x, expected = official_models(name)
    assert (parity_error(logits_with_bug(model, bug, x), expected) > 1).all()
    assert_parity(model(x, training=False), expected)  # the injected bug is gone again


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_official_key_names_and_shapes_are_exactly_ours(official_dir, default_models, name):
    official = state_dict_from(load_pth(official_dir / f"{FIXTURES[name]}.pth"))
    head = "classifier.0." if "resnet" in name else "classifier.1."
    ours = to_state_dict(default_models(name), head)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in official.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name, head", [("dcd_mobilenetv2_100", "classifier.0."), ("dcd_resnet50", "classifier.1.")])
def test_authors_checkpoint_layout_loads_for_the_unfixtured_models(tmp_path, name, head):
    """×1.0 and ResNet-50 (released as ``.pth.tar`` with ``state_dict`` and ``module.``), either classifier index."""
    source = logits_model(name, input_shape=(64, 64, 3))
    randomize(source)
    wrapped = {"epoch": np.array(1), "state_dict": {f"module.{k}": v for k, v in to_state_dict(source, head).items()}}
    path = save_zip_checkpoint(wrapped, tmp_path / f"{name}.pth.tar")
    loaded = logits_model(name, input_shape=(64, 64, 3), weights=path)
    x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x, training=False), source(x, training=False), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_include_top_false_loads_the_backbone_and_a_wrong_checkpoint_lists_mismatches(official_dir, official_models):
    path = official_dir / "mobilenetv2_dcd_w0.5.pth"
    full, _, _ = official_models("dcd_mobilenetv2_050")  # the same checkpoint, with its top
    backbone = dynzoo.create_model(
        "dcd_mobilenetv2_050", include_top=False, pooling="avg", include_preprocessing=False, weights=path
    )
    assert backbone.output.shape == (None, 1280)
    x = np.random.default_rng(2).normal(size=(1, 224, 224, 3)).astype("float32")
    features = keras.Model(full.input, full.get_layer("avg_pool").output)
    np.testing.assert_allclose(backbone(x, training=False), features(x, training=False), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="does not match this model") as error:
        dynzoo.create_model("dcd_mobilenetv2_035", weights=path)
    assert "shape mismatches" in str(error.value)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dcd_mobilenetv2_035", "dcd_resnet10"])
def test_keras_file_round_trip_is_exact(tmp_path, name):
    model = dynzoo.create_model(name, input_shape=(64, 64, 3))
    randomize(model)
    model.save(tmp_path / f"{name}.keras")
    restored = keras.models.load_model(tmp_path / f"{name}.keras")
    x = np.random.default_rng(3).uniform(0, 255, size=(2, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(restored(x, training=False), model(x, training=False))


def test_condconv_classifier_round_trip_is_exact(tmp_path):
    """CondConv's dynamic classifier and the DY-Conv blocks serialize (the blocks' layers: test_dynamic_conv)."""
    from dynzoo.models.mobilenetv2 import DynamicDense, InvertedResidual

    settings = {"experts": 8, "routing": "sigmoid", "attention_reduction": None, "formulation": "kernel"}
    inp = keras.Input((8, 8, 8))
    x = InvertedResidual(8, 1, 6, conv="dynamic", experts=4, attention_reduction=4)(inp)
    out = DynamicDense(10, settings)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    randomize(model)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 8)).astype("float32")
    np.testing.assert_array_equal(restored(x, training=False), model(x, training=False))


@pytest.mark.slow
def test_dynamic_models_place_their_layers_like_table_3_4():
    """DY-Conv: every conv of the blocks, K = 4, softmax; CondConv also the last 1×1 conv and the classifier,
    K = 8, sigmoid. Their sizes land within 4% of the paper's (thesis Table 3.4)."""
    from dynzoo.layers import DynamicConv2D

    for name, experts, routing, paper in (
        ("dy_mobilenetv2_100", 4, "softmax", 11.1e6),
        ("dy_mobilenetv2_050", 4, "softmax", 4.0e6),
        ("condconv_mobilenetv2_100", 8, "sigmoid", 27.5e6),
        ("condconv_mobilenetv2_050", 8, "sigmoid", 15.5e6),
    ):
        model = dynzoo.create_model(name)
        layers = [l for l in all_layers(model) if isinstance(l, DynamicConv2D)]
        assert {(l.experts, l.routing) for l in layers} == {(experts, routing)}
        assert len(layers) == 50 + (2 if routing == "sigmoid" else 0)  # 17 blocks: 1×2 + 16×3 convs (+ head)
        assert abs(trainable(model) - paper) / paper < 0.04


@pytest.mark.slow
def test_int16x8_tracks_float_on_the_official_weights(official_models):
    """DCD-MobileNetV2 ×0.5 with the fixture's weights, whose BN statistics are calibrated on the activations
    each BN sees, exported fully integer (int16 activations, int8 weights): no training, so nothing depends
    on how a run went. Before the shared biases were repaired (``unshare_biases``) this network fell to
    chance. Measured: relative logit error 0.018, top-1 agreement 8/8."""
    from dynzoo.export import convert, run_tflite
    from dynzoo.export.tflite import float_ops

    model, _, _ = official_models("dcd_mobilenetv2_050")
    rng = np.random.default_rng(0)
    calibration, x = rng.normal(size=(2, 8, 224, 224, 3)).astype("float32")
    flatbuffer = convert(model, "int16x8", calibration)
    assert float_ops(flatbuffer) == []  # fully integer inside (float only at the I/O edges)
    # parity_report's two figures (that function: test_quickstart, test_ddw_models), with the Keras logits
    # of a direct call: its model.predict would trace the 224×224 network once more
    reference = np.asarray(model(x, training=False))
    converted = run_tflite(flatbuffer, x)
    relative_error = np.abs(converted - reference).max() / np.abs(reference).max()
    top1_agreement = (converted.argmax(-1) == reference.argmax(-1)).mean()
    assert relative_error < 0.05 and top1_agreement >= 7 / 8, (relative_error, top1_agreement)


# One network per kind of dynamic layer and backbone; DCD-MobileNetV2 ×0.5 is converted in float32, int8
# and mixed by tests/test_export.py, and in int16x8 above. The MobileNetV2s keep only their first two stages
# (a t = 1 block, a strided t = 6 block, a residual t = 6 block: every kind of block and dynamic layer they
# have) between the registered stem, head conv and classifier; tracing and conversion time grow with the
# number of blocks, and the other 14 blocks repeat the same layers with other widths.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["dy_mobilenetv2_035", "condconv_mobilenetv2_050", "resnet10", "dcd_resnet10"])
def test_float32_tflite_is_builtin_only_and_matches_keras(monkeypatch, name):
    from dynzoo.export import op_names, run_tflite, to_tflite

    if "mobilenetv2" in name:
        config = mobilenetv2.load_config("mobilenetv2")
        monkeypatch.setattr(mobilenetv2, "load_config", lambda family: {**config, "blocks": config["blocks"][:2]})
    model = logits_model(name, input_shape=(64, 64, 3))
    if "mobilenetv2" in name:
        assert [layer.name for layer in model.layers if layer.name.startswith("block")] == [
            "block1",
            "block2",
            "block3",
        ]
    randomize(model, seed=5)
    flatbuffer = to_tflite(model)
    ops = set(op_names(flatbuffer))
    assert not any(op.startswith("CUSTOM") for op in ops)
    assert not ops & {"VAR_HANDLE", "READ_VARIABLE", "RSQRT"}, ops  # variables and BNs folded
    x = np.random.default_rng(6).normal(size=(2, 64, 64, 3)).astype("float32")
    expected = np.asarray(model(x, training=False))
    assert np.abs(run_tflite(flatbuffer, x) - expected).max() <= 1e-4 * np.abs(expected).max()


def test_bottleneck_dcd_block_converts_and_matches():
    """The DCD-ResNet-50 block (global pooling, 1×1 and strided 3×3 DCD convs, downsample)."""
    from dynzoo.export import run_tflite, to_tflite

    inp = keras.Input((16, 16, 64))
    model = keras.Model(inp, ResNetBlock(32, 2, bottleneck=True, conv="dcd")(inp))
    randomize(model, seed=7)
    x = np.random.default_rng(8).normal(size=(2, 16, 16, 64)).astype("float32")
    expected = np.asarray(model(x, training=False))
    assert np.abs(run_tflite(to_tflite(model), x) - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("dcd_resnet18", {"dropout_rate": 1.5}, "`dropout_rate` must be in [0, 1)"),
        ("dy_mobilenetv2_050", {"formulation": "fast"}, "`formulation` must be one of"),
        ("dcd_mobilenetv2_050", {"inference_form": "fast"}, "`inference_form` must be one of"),
        ("resnet18", {"input_shape": (31, 100, 3)}, "input height must be at least 32, got 31"),
        ("dcd_resnet50", {"input_shape": (None, None, 4), "weights": "imagenet"}, "takes 3-channel (RGB) input"),
        ("dcd_resnet50", {"weights": "no_such_checkpoint.pth"}, "`weights`: no such file"),
    ],
)
def test_bad_arguments_raise_clear_errors(name, kwargs, message):
    with pytest.raises(ValueError) as error:
        dynzoo.create_model(name, **kwargs)
    assert message in str(error.value)


def test_registered_names():
    from dynzoo.registry import get_entry

    def family(name):
        return [n for n in dynzoo.list_models() if get_entry(n).family == name]

    assert family("mobilenetv2") == [
        "condconv_mobilenetv2_050",
        "condconv_mobilenetv2_100",
        "dcd_mobilenetv2_035",
        "dcd_mobilenetv2_050",
        "dcd_mobilenetv2_100",
        "dy_mobilenetv2_035",
        "dy_mobilenetv2_050",
        "dy_mobilenetv2_100",
        "mobilenetv2_035",
        "mobilenetv2_050",
        "mobilenetv2_100",
    ]
    assert family("resnet") == ["dcd_resnet10", "dcd_resnet18", "dcd_resnet50", "resnet10", "resnet18", "resnet50"]
