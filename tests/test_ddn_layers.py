"""DomainAwareConv2D (DDN §3.1) and the domain embeddings: the mixture's math, folding, errors, round trips."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from dynzoo.layers.base import count_madds
from dynzoo.layers.domain import DomainAwareConv2D, DomainEmbeddings, StreamingDomainEmbedding

CASES = [  # kind, filters, kernel, stride, use_bias, input shape
    ("conv", 5, 3, 2, False, (2, 9, 9, 4)),
    ("conv", 6, 1, 1, True, (2, 5, 5, 3)),
    ("depthwise", None, 3, 2, False, (2, 8, 8, 4)),
    ("depthwise", None, 3, 1, True, (2, 6, 6, 3)),
    ("dense", 7, 1, 1, True, (3, 5)),
]


def _layer(kind, filters, k, s, bias, shape, experts=3, dim=6):
    layer = DomainAwareConv2D(filters, k, s, experts, kind=kind, use_bias=bias)
    layer.build([shape, (None, dim)])
    rng = np.random.default_rng(0)
    layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])
    return layer


def _reference(layer, x, alpha):
    """Σ_j α_j (W_j * x + b_j), each expert as a plain TF op with PyTorch's symmetric padding."""
    weights = layer.get_weights()
    kernels, biases = weights[0], (weights[1] if layer.use_bias else None)
    total = 0
    for j, a in enumerate(alpha):
        if layer.kind == "dense":
            y = x @ kernels[j]
        else:
            p = layer.kernel_size // 2
            xp = np.pad(x, [(0, 0), (p, p), (p, p), (0, 0)])
            s = [1, layer.strides, layer.strides, 1]
            y = (
                tf.nn.depthwise_conv2d(xp, kernels[j], s, "VALID")
                if layer.kind == "depthwise"
                else tf.nn.conv2d(xp, kernels[j], s, "VALID")
            ).numpy()
        total = total + a * (y + (biases[j] if biases is not None else 0))
    return total


@pytest.mark.parametrize("case", CASES, ids=[c[0] + str(c[2]) + "s" + str(c[3]) for c in CASES])
def test_mixture_is_the_sum_of_the_experts_and_folds_exactly(case):
    layer = _layer(*case)
    rng = np.random.default_rng(1)
    x = rng.normal(size=case[-1]).astype("float32")
    e = rng.normal(size=6).astype("float32")
    y = np.asarray(layer([x, np.tile(e, (len(x), 1))]))
    dense = layer.controller.get_weights()
    alpha = 1 / (1 + np.exp(-(e @ dense[0] + dense[1])))  # α = sigmoid(θᵀE + b), not normalised
    np.testing.assert_allclose(np.asarray(layer.mixing_factors(e[None])), alpha, rtol=1e-5)
    np.testing.assert_allclose(y, _reference(layer, x, alpha), rtol=1e-4, atol=1e-4)
    folded = layer.fold(e)
    assert folded.name == layer.name and len(folded.get_weights()) == 1 + layer.use_bias
    np.testing.assert_allclose(np.asarray(folded(x)), y, rtol=1e-5, atol=1e-5)


def test_one_expert_is_a_scaled_static_layer_and_the_batch_shares_one_domain():
    layer = _layer("conv", 4, 3, 1, False, (1, 6, 6, 2), experts=1)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 6, 6, 2)).astype("float32")
    e = rng.normal(size=(3, 6)).astype("float32")
    alpha = np.asarray(layer.mixing_factors(e))
    static = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
    static.build((None, 6, 6, 2))
    static.set_weights([layer.get_weights()[0][0] * alpha[0]])
    np.testing.assert_allclose(np.asarray(layer([x, e])), np.asarray(static(x)), rtol=1e-5, atol=1e-5)
    # the batch's domain is the mean embedding row: the whole batch uses one kernel
    np.testing.assert_allclose(
        np.asarray(layer([x, e])), np.asarray(layer([x, np.tile(e.mean(0), (3, 1))])), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"filters": 4, "kind": "pointwise"}, "kind"),
        ({"kind": "conv"}, "filters"),
        ({"filters": 4, "kernel_size": 2}, "kernel_size"),
        ({"filters": 4, "experts": 0}, "experts"),
        ({"filters": 4, "kind": "dense", "strides": 2}, "strides"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        DomainAwareConv2D(**kwargs)


def test_bad_inputs_are_refused():
    layer = DomainAwareConv2D(4, 3)
    with pytest.raises(ValueError, match="inputs"):
        layer.build((None, 8, 8, 3))
    with pytest.raises(ValueError, match="inputs"):
        DomainAwareConv2D(4, kind="dense").build([(None, 8, 8, 3), (None, 5)])
    with pytest.raises(ValueError, match="`filters`"):
        DomainAwareConv2D(5, 3, kind="depthwise").build([(None, 8, 8, 3), (None, 5)])


def test_keras_round_trip_and_madds(tmp_path):
    x_in, e_in = keras.Input((8, 8, 3)), keras.Input((5,))
    y = DomainAwareConv2D(6, 3, 2, 4, name="dac")([x_in, e_in])
    y = DomainAwareConv2D(None, 3, 1, 4, kind="depthwise")([y, e_in])
    model = keras.Model(
        [x_in, e_in],
        DomainAwareConv2D(3, kind="dense", use_bias=True)([keras.layers.GlobalAveragePooling2D()(y), e_in]),
    )
    rng = np.random.default_rng(3)
    inputs = [rng.normal(size=(2, 8, 8, 3)).astype("float32"), np.tile(rng.normal(size=5), (2, 1)).astype("float32")]
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(np.asarray(model(inputs)), np.asarray(loaded(inputs)))
    layer = model.get_layer("dac")
    # static conv 4·4·6 outputs × 3·3·3, mixing 4 experts × 3·3·3·6 weights, controller 5 × 4
    assert count_madds(layer, [(1, 8, 8, 3), (1, 5)]) == 96 * 27 + 4 * 162 + 20
    assert count_madds(layer.fold(inputs[1][0]), (1, 8, 8, 3)) == 96 * 27


def test_domain_embeddings_standardise_save_and_load(tmp_path):
    raw = {"day": np.array([1.0, 10.0, 3.0]), "night": np.array([3.0, 30.0, 3.0])}
    table = DomainEmbeddings(raw)
    np.testing.assert_allclose(table["day"], np.array([-1.0, -1.0, 0.0]) / np.sqrt(3), atol=1e-6)  # z-score / √D
    path = table.save(tmp_path / "e.json")
    again = DomainEmbeddings.load(path)
    assert again.domains == ["day", "night"]
    np.testing.assert_allclose(again["night"], table["night"])
    other = table.with_raw({"dusk": np.array([2.0, 20.0, 3.0])})
    np.testing.assert_allclose(other["dusk"], [0.0, 0.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="domain"):
        table["fog"]
    (tmp_path / "bad.json").write_text(json.dumps({"domains": {}}))
    with pytest.raises(ValueError, match="domain embedding"):
        DomainEmbeddings.load(tmp_path / "bad.json")


def test_embedding_scale_multiplies_the_standardised_embedding_and_is_saved(tmp_path):
    raw = {"day": np.array([1.0, 10.0, 3.0]), "night": np.array([3.0, 30.0, 3.0])}
    scaled = DomainEmbeddings(raw, scale=8.0)
    np.testing.assert_allclose(scaled["day"], 8.0 * DomainEmbeddings(raw)["day"], rtol=1e-6)
    again = DomainEmbeddings.load(scaled.save(tmp_path / "e.json"))
    assert again.scale == 8.0
    np.testing.assert_allclose(again.with_raw({"dusk": np.array([3.0, 30.0, 3.0])})["dusk"], scaled["night"])
    legacy = json.loads((tmp_path / "e.json").read_text())
    del legacy["scale"]  # files written before the option load with scale 1
    (tmp_path / "legacy.json").write_text(json.dumps(legacy))
    assert DomainEmbeddings.load(tmp_path / "legacy.json").scale == 1.0
    for bad in (0, -1.0, "8", True):
        with pytest.raises(ValueError, match="`scale` must be a number > 0"):
            DomainEmbeddings(raw, scale=bad)


def test_streaming_embedding_is_the_mean_of_the_last_n_frames():
    table = DomainEmbeddings({"a": np.zeros(2), "b": np.full(2, 2.0)})
    stream = StreamingDomainEmbedding(table, window=3)
    with pytest.raises(ValueError, match="update"):
        stream.embedding()
    frames = np.arange(20, dtype="float32").reshape(10, 2)
    stream.update(frames[:4])
    stream.update(frames[4:7])
    assert stream.frames == 3
    np.testing.assert_allclose(stream.embedding(), table.standardise(frames[4:7].mean(0)), rtol=1e-6)
    with pytest.raises(ValueError, match="`window`"):
        StreamingDomainEmbedding(table, window=0)


def test_streaming_embedding_from_images_matches_the_fixed_one():
    from dynzoo.models.ddn import domain_feature_extractor

    inputs = keras.Input((32, 32, 3))
    extractor = domain_feature_extractor(
        keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(inputs)))
    )
    rng = np.random.default_rng(4)
    images = {"dark": rng.integers(0, 60, (6, 32, 32, 3)), "bright": rng.integers(150, 255, (6, 32, 32, 3))}
    table = DomainEmbeddings.from_images(extractor, images)
    stream = StreamingDomainEmbedding(table, window=6, extractor=extractor)
    stream.update_images(images["bright"])
    np.testing.assert_allclose(stream.embedding(), table["bright"], rtol=1e-4, atol=1e-4)
