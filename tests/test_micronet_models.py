"""MicroNet-M0…M3: sizes, official-checkpoint parity, serialization, training, TFLite, errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from official_parity import assert_input_sensitive, assert_parity, logits_with_bug, official_io, parity_error
from torch_format import malicious_pickle, save_zip_checkpoint

import dynzoo
from dynzoo.models.micronet import official_layer_prefixes
from dynzoo.weights import CheckpointError, UnsafeCheckpointError, official_targets

NAMES = ["micronet_m0", "micronet_m1", "micronet_m2", "micronet_m3"]
# measured on the authors' official modules: the parameter counts, state-dict sizes and MAdds at 224×224
OFFICIAL = {
    "micronet_m0": (1_019_590, 218, 4.05e6),
    "micronet_m1": (1_777_587, 218, 6.12e6),
    "micronet_m2": (2_393_876, 290, 12.74e6),
    "micronet_m3": (2_622_960, 322, 20.81e6),
}


def logits_model(name, **kwargs):
    return dynzoo.create_model(name, include_preprocessing=False, classifier_activation=None, **kwargs)


def to_state_dict(model) -> dict[str, np.ndarray]:
    """Our weights in the official PyTorch layout (the inverse of the converter's transforms)."""
    state = {}

    def walk(layer, prefix):
        if hasattr(layer, "official_children"):
            for name, child in layer.official_children():
                walk(child, f"{prefix}{name}.")
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, cin, mult = layer.kernel.shape
            state[prefix + "weight"] = layer.kernel.numpy().transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
        elif isinstance(layer, keras.layers.Conv2D):
            state[prefix + "weight"] = layer.kernel.numpy().transpose(3, 2, 0, 1)
        elif isinstance(layer, keras.layers.Dense):
            state[prefix + "weight"] = layer.kernel.numpy().T
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

    for layer, prefix in official_layer_prefixes(model):
        walk(layer, prefix)
    return state


def randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        value = rng.normal(0, 0.3, size=v.shape)
        if "variance" in v.path:
            value = np.abs(value) + 0.5
        v.assign(value.astype("float32"))


@pytest.mark.parametrize("name", NAMES)
def test_sizes_equal_the_official_modules(name):
    params, keys, madds = OFFICIAL[name]
    model = dynzoo.create_model(name)
    profile = dynzoo.profile(model)
    assert profile.params == params
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == params
    assert abs(profile.madds - madds) / madds < 0.01
    # the official state dict: every parameter and BN buffer, num_batches_tracked included
    assert len(to_state_dict(model)) == keys
    assert (
        len([k for p in official_layer_prefixes(model) for k in official_targets(*p)])
        + sum(isinstance(layer, keras.layers.BatchNormalization) for layer in _all_layers(model))
        == keys
    )


def _all_layers(model):
    stack, out = list(model.layers), []
    while stack:
        layer = stack.pop()
        out.append(layer)
        stack.extend(getattr(layer, "steps", []))
        stack.extend(layer._layers if hasattr(layer, "_layers") else [])
    return {id(l): l for l in out}.values()


@pytest.mark.parametrize(
    "name, checkpoint",
    [
        ("micronet_m0", "micronet_m0.pth"),
        ("micronet_m0", "micronet_m0_legacy.pth"),
        ("micronet_m0", "micronet_m0_wrapped.pth.tar"),
        ("micronet_m0", "micronet_m0_wrapped_legacy.pth.tar"),
        ("micronet_m2", "micronet_m2.pth"),
    ],
)
def test_parity_with_the_official_models(official_dir, name, checkpoint):
    model = logits_model(name, weights=official_dir / checkpoint)
    x, expected = official_io(official_dir, name)
    # every sample: the dynamic branches are per sample (an eager call, as below: predict would trace the
    # model first, which costs several times more than running it)
    assert_parity(model(x, training=False), expected)
    assert_input_sensitive(model, x, expected)


@pytest.fixture(scope="module")
def official_m0(official_dir):
    model = logits_model("micronet_m0", weights=official_dir / "micronet_m0.pth")
    return model, *official_io(official_dir, "micronet_m0")


@pytest.mark.parametrize(
    "bug", ["batch_mean_coefficients", "bn_mean_variance_swapped", "classifier_bias_dropped", "channel_shuffle_skipped"]
)
def test_parity_fails_for_a_converted_model_with_a_bug(official_m0, bug):
    """Each bug moves every sample's logits by 14× (batch-mean coefficients) to over 500× the tolerance."""
    model, x, expected = official_m0
    assert (parity_error(logits_with_bug(model, bug, x), expected) > 1).all()
    assert_parity(model(x, training=False), expected)  # the injected bug is gone again


@pytest.mark.parametrize("name", ["micronet_m0", "micronet_m2"])
def test_official_key_names_and_shapes_are_exactly_ours(official_dir, name):
    from dynzoo.weights import load_pth, state_dict_from

    official = state_dict_from(load_pth(official_dir / f"{name}.pth"))
    ours = to_state_dict(dynzoo.create_model(name))
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in official.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["micronet_m1", "micronet_m3"])
def test_checkpoint_in_the_official_layout_loads_for_every_model(tmp_path, name):
    """M1/M3 have no fixture: write our weights as an official checkpoint, load it into a fresh model."""
    source = logits_model(name, input_shape=(64, 64, 3))
    randomize(source)
    path = save_zip_checkpoint(
        {"state_dict": {f"module.{k}": v for k, v in to_state_dict(source).items()}}, tmp_path / f"{name}.pth.tar"
    )
    loaded = logits_model(name, input_shape=(64, 64, 3), weights=path)
    x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x, training=False), source(x, training=False), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_include_top_false_loads_the_backbone(official_dir):
    full = logits_model("micronet_m0", weights=official_dir / "micronet_m0.pth")
    backbone = dynzoo.create_model(
        "micronet_m0",
        include_top=False,
        pooling="avg",
        include_preprocessing=False,
        weights=official_dir / "micronet_m0.pth",
    )
    assert backbone.output.shape == (None, 384)
    x = np.random.default_rng(2).normal(size=(1, 224, 224, 3)).astype("float32")
    features = keras.Model(full.input, full.get_layer("avg_pool").output)
    np.testing.assert_allclose(backbone(x, training=False), features(x, training=False), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["micronet_m0", "micronet_m3"])
def test_keras_file_round_trip_is_exact(tmp_path, name):
    model = dynzoo.create_model(name, input_shape=(64, 64, 3))
    randomize(model)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    x = np.random.default_rng(3).uniform(0, 255, size=(2, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(restored(x, training=False), model(x, training=False))


@pytest.mark.slow
def test_a_training_step_reduces_the_loss_and_reaches_every_weight():
    model = dynzoo.create_model(
        "micronet_m0", input_shape=(32, 32, 3), classes=10, dropout_rate=0.0, classifier_activation=None
    )
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 255, size=(16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=16)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)

    def step():  # eager: five steps cost less than tracing one
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_weights)
        optimizer.apply_gradients(zip(grads, model.trainable_weights, strict=False))
        return loss, grads

    first, grads = step()
    dead = [w.path for w, g in zip(model.trainable_weights, grads, strict=False) if g is None or not np.any(g.numpy())]
    assert not dead, f"no gradient reaches {dead}"
    shift_max = [w.path for w in model.trainable_weights if "dynamic_shift_max" in w.path]
    assert len(shift_max) >= 4 * 13  # fc1/fc2 kernels and biases of every Dynamic Shift-Max
    losses = [float(first)] + [float(step()[0]) for _ in range(4)]
    assert losses[-1] < losses[0], losses


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_float32_tflite_is_builtin_only_and_matches_keras(name):
    from dynzoo.export import op_names, run_tflite, to_tflite

    model = logits_model(name)
    randomize(model, seed=5)
    flatbuffer = to_tflite(model)
    ops = set(op_names(flatbuffer))
    assert not any(op.startswith("CUSTOM") for op in ops)
    # a sound conversion folds variables and BatchNorm and needs no layout transposes: the only
    # TRANSPOSEs are the channel shuffles', on the (…, g, C/g) channel grid (rank 5)
    assert not ops & {"VAR_HANDLE", "READ_VARIABLE", "RSQRT"}, ops
    assert "TRANSPOSE" in ops and set(transpose_input_ranks(flatbuffer)) == {5}
    x = np.random.default_rng(6).normal(size=(2, 224, 224, 3)).astype("float32")
    expected = np.asarray(model(x, training=False))  # eager: predict would trace the model once more
    got = run_tflite(flatbuffer, x)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_the_full_integer_export_form_is_exact(official_dir, tmp_path, monkeypatch):
    """int8 exports trace MicroNet in the form XNNPACK runs on int8 (Dynamic Shift-Max element-wise with
    its max as ``a + relu(b − a)``, channels moved by 1×1 convolutions, hard-swish as ``relu6(x + 3) · x / 6``):
    in Keras and in float32 TFLite it gives the model's logits to 1e-5 relative on the official weights, and
    a wrong channel shift fails."""
    from dynzoo.export import convert, op_names, run_tflite
    from dynzoo.export.tflite import exportable, save_for_conversion
    from dynzoo.layers import shift_max
    from dynzoo.layers.base import export_form

    model = logits_model("micronet_m0", input_shape=(64, 64, 3), weights=official_dir / "micronet_m0.pth")
    x = np.random.default_rng(7).normal(size=(4, 64, 64, 3)).astype("float32")
    expected = np.asarray(model(x, training=False))
    relative = lambda got: np.abs(np.asarray(got) - expected).max() / np.abs(expected).max()  # noqa: E731
    assert relative(model(np.zeros_like(x), training=False)) > 100 * 1e-5  # the logits depend on the input
    friendly = exportable(model, "int8")
    with export_form(integer=True):
        assert relative(friendly(x, training=False)) <= 1e-5
    flatbuffer = convert(
        friendly, "float32", saved_model=save_for_conversion(friendly, tmp_path / "saved", integer=True)
    )
    assert not {"MAXIMUM", "BATCH_MATMUL", "HARD_SWISH"} & set(op_names(flatbuffer))
    assert relative(run_tflite(flatbuffer, x)) <= 1e-5
    monkeypatch.setattr(shift_max, "partner_indices", lambda channels, groups: np.arange(channels))  # no shift
    with export_form(integer=True):
        assert relative(friendly(x, training=False)) > 1e-2


def transpose_input_ranks(flatbuffer: bytes) -> list[int]:
    from dynzoo.export.flatbuffer import operator_name, read_model

    schema, model = read_model(flatbuffer)
    graph = model.subgraphs[0]
    return [
        len(graph.tensors[op.inputs[0]].shape)
        for op in graph.operators
        if operator_name(schema, model, op) == "TRANSPOSE"
    ]


@pytest.mark.parametrize("size", [64, 96, 256])
def test_any_multiple_of_32_works(size):
    model = dynzoo.create_model("micronet_m1", input_shape=(size, size, 3), include_top=False)
    assert model.output.shape == (None, size // 32, size // 32, 576)


def test_dynamic_input_size_and_input_tensor():
    model = dynzoo.create_model("micronet_m0", input_shape=(None, None, 3), include_top=False, pooling="max")
    assert model(np.zeros((1, 96, 64, 3), "float32"), training=False).shape == (1, 384)
    tensor = keras.Input((64, 64, 3))
    model = dynzoo.create_model("micronet_m0", input_tensor=tensor, classes=7)
    assert model.output.shape == (None, 7)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_shape=(16, 16, 3)), "at least 32"),
        (dict(input_shape=(224, 224, 1), weights="imagenet"), "3-channel"),
        (dict(input_shape=(224, 224, 0)), "positive channel count"),
        (dict(input_shape=(224, 224)), "input_shape"),
        (dict(weights="imagenet", classes=10), "classes"),
        (dict(weights="no/such/file.pth"), "no such file"),
        (dict(pooling="sum", include_top=False), "pooling"),
        (dict(classes=0), "classes"),
        (dict(dropout_rate=1.5), "dropout_rate"),
        (dict(include_preprocessing="no"), "`include_preprocessing` must be True or False, got 'no'"),
        (dict(include_top=1), "`include_top` must be True or False"),
        (dict(input_shape=(64, 64, 3), input_tensor=keras.Input((32, 32, 3))), r"contradicts .*\(32, 32, 3\)"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dynzoo.create_model("micronet_m0", **kwargs)


def test_keras_name_and_numpy_integers_are_accepted():
    """``name`` is the Keras model's name (create_model's own argument is positional), and NumPy
    integers work where ints do, as they come out of label arrays."""
    model = dynzoo.create_model("micronet_m0", name="backbone", classes=np.int64(5), input_shape=(32, 32, 3))
    assert model.name == "backbone" and model.output.shape == (None, 5)
    model = dynzoo.create_model(
        "micronet_m0",
        input_shape=(None, None, 3),
        input_tensor=keras.Input((32, 32, 3)),
        include_preprocessing=np.bool_(False),
    )
    assert model.input.shape == (None, 32, 32, 3) and model.get_layer("stem") is not None


def test_truncated_checkpoint_is_a_clear_error(official_dir, tmp_path):
    data = (official_dir / "micronet_m0.pth").read_bytes()
    for name, content in (
        ("cut.pth", data[: len(data) // 2]),
        ("cut_legacy.pth", (official_dir / "micronet_m0_legacy.pth").read_bytes()[:-1000]),
    ):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match="truncated|corrupted|not a readable"):
            dynzoo.create_model("micronet_m0", weights=tmp_path / name)


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "notes.pth").write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        dynzoo.create_model("micronet_m0", weights=tmp_path / "notes.pth")


def test_checkpoint_of_another_architecture_lists_the_mismatches(official_dir):
    with pytest.raises(ValueError, match="does not match this model") as info:
        dynzoo.create_model("micronet_m0", weights=official_dir / "micronet_m2.pth")
    assert "unexpected keys" in str(info.value) and "shape mismatches" in str(info.value)


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = save_zip_checkpoint({}, tmp_path / "evil.pth", pickle_bytes=malicious_pickle(f"touch {marker}"))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        dynzoo.create_model("micronet_m0", weights=path)
    assert not marker.exists()
