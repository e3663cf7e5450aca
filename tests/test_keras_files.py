"""Every registered model built as keras' applications tests build theirs, and .keras files: every registered
model passes those tests' checks and loads in Keras' safe mode, Python code in a file is refused, and
``dynzoo.load_model`` names what is wrong with a file."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import dynzoo
from dynzoo.applications import feature_levels_table
from dynzoo.models.common import feature_levels_of

REPO = Path(__file__).resolve().parent.parent

# keras' applications tests build each model on a Keras tensor: a Conv2D(3, 2, strides=2) over 200×200×4.
# Here a Conv2D(4, 2, strides=2) over 246×246×4, so the model also gets 4 channels and an input size that
# is not a multiple of 32 (123×123×4).
TENSOR_INPUT = (246, 246, 4)
INPUT = (32, 32, 3)


def _on_a_keras_tensor(name: str) -> keras.Model:
    inputs = keras.Input(TENSOR_INPUT, name="custom_input")
    tensor = keras.layers.Conv2D(4, 2, strides=2, padding="valid")(inputs)
    return dynzoo.create_model(name, weights=None, input_tensor=tensor, classifier_activation="softmax")


def _flattens(name: str) -> bool:
    """DRT's LeNets end in flat features: a fixed input size, and no feature map without the top."""
    return "lenet" in name.split("_")


def _output_shape(model: keras.Model) -> list:
    return list(model.outputs[0].shape)


def _classes(config) -> set[tuple[str, str]]:
    """Every (module, class) that deserialising ``config`` instantiates."""
    found = set()
    if isinstance(config, dict):
        if "class_name" in config:
            found.add((config.get("module") or "", config["class_name"]))
        for value in config.values():
            found |= _classes(value)
    elif isinstance(config, list):
        for value in config:
            found |= _classes(value)
    return found


@pytest.fixture(scope="module")
def built() -> dict[str, dict]:
    """Every registered model built twice as keras' applications tests build theirs, ``weights=None``:

    - ``top``: on a Keras tensor (123×123×4 from a Conv2D), ``classifier_activation="softmax"``: its
      serialized config (as in a ``.keras`` file's config.json), parameter count, output shape and
      last layer's activation;
    - ``include_top=False`` on (None, None, 1) input (LeNets flatten: 32×32×1) with ``pooling="max"``:
      its output shape (``notop_max``), the shape of the map it pools, which is what ``pooling=None``
      returns (``notop``), and its feature levels.
    """
    result = {}
    for name in dynzoo.list_models():
        # Shapes and configs only, so the variables never get their initial values (drawing them took
        # over a third of the builds' time; the models are never run): a stateless scope defers them,
        # leaving it does not compute them, and clear_session below drops the deferred ones.
        with keras.StatelessScope(initialize_variables=False):
            model = _on_a_keras_tensor(name)
            size = 32 if _flattens(name) else None
            notop = dynzoo.create_model(name, include_top=False, input_shape=(size, size, 1), pooling="max")
        pooled = notop.layers[-1]
        result[name] = {
            "config": keras.saving.serialize_keras_object(model),
            "params": model.count_params(),
            "top": _output_shape(model),
            "activation": model.layers[-1].activation.__name__,
            "notop_max": _output_shape(notop),
            "notop": list(pooled.input.shape) if isinstance(pooled, keras.layers.GlobalMaxPooling2D) else None,
            "levels": {level: channels for level, (_, channels) in feature_levels_of(notop).items()},
        }
        keras.backend.clear_session()
    return result


@pytest.fixture(scope="module")
def configs(built) -> dict[str, dict]:
    return {name: model["config"] for name, model in built.items()}


@pytest.mark.slow
def test_every_registered_model_passes_the_keras_applications_checks(built):
    """keras' applications tests, adapted (channels last, ``weights=None``): 1 and 4 input channels, an
    input size that is not a multiple of 32, ``input_tensor`` from any Keras tensor, ``pooling="max"``
    and ``classifier_activation``. (Serialisation: the safe-mode test below.)"""
    for name, model in built.items():
        features = model["notop_max"][-1]
        assert isinstance(features, int) and features > 1 and model["notop_max"] == [None, features], name
        if _flattens(name):
            assert model["notop"] is None, name  # flat features: nothing left to pool
        else:
            assert model["notop"] == [None, None, None, features], name
        assert len(model["top"]) == 2 and model["top"][0] is None and model["top"][1] >= 2, name
        assert model["activation"] == "softmax", name


@pytest.mark.slow
def test_the_documented_feature_levels_are_every_models_levels(built):
    """docs/applications.md lists every model's feature levels (``dynzoo list --features``); the table
    there is what the models have, and every model offers at least two levels."""
    doc = (REPO / "docs" / "applications.md").read_text()
    documented = re.search(r"<!-- feature-levels -->\n(.*?)\n<!-- /feature-levels -->", doc, re.S)[1]
    expected = feature_levels_table({name: model["levels"] for name, model in built.items()})
    assert documented == expected, "docs/applications.md is stale: regenerate with `dynzoo list --features`"
    assert all(len(model["levels"]) >= 2 for model in built.values())


@pytest.mark.slow
def test_no_registered_model_carries_python_code(configs):
    """What safe mode refuses is Python code in the config: a Lambda layer or a ``__lambda__``
    function. No registered model's config holds one."""
    assert len(configs) == len(dynzoo.list_models()) >= 50
    for name, config in configs.items():
        text = json.dumps(config)
        assert '"Lambda"' not in text and "__lambda__" not in text, name


@pytest.mark.slow
def test_every_class_of_every_registered_model_deserializes_in_safe_mode(configs, built):
    """``keras.models.load_model(path, safe_mode=True)`` deserialises config.json. Whether safe mode lets a
    config through depends only on the classes in it, so the models rebuilt here, chosen greedily until
    they hold every (module, class) of all the configs, stand for all of them. Each rebuilds to the
    same parameter count and classes."""
    needed = set().union(*map(_classes, configs.values()))
    chosen, covered = [], set()
    while covered != needed:  # the model adding the most classes; the smaller config on a tie
        name = max(configs, key=lambda n: (len(_classes(configs[n]) - covered), -len(json.dumps(configs[n]))))
        chosen.append(name)
        covered |= _classes(configs[name])
    assert len(chosen) < len(configs)
    for name in chosen:
        # a copy as load_model reads it from JSON: deserialising consumes the dict it is given
        rebuilt = keras.saving.deserialize_keras_object(json.loads(json.dumps(configs[name])), safe_mode=True)
        assert rebuilt.count_params() == built[name]["params"], name
        assert _classes(keras.saving.serialize_keras_object(rebuilt)) == _classes(configs[name]), name
        keras.backend.clear_session()


@pytest.fixture(scope="module")
def m0_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keras") / "m0.keras"
    model = dynzoo.create_model("micronet_m0", weights=None, input_shape=INPUT, classes=10)
    model.save(path)
    return path, model


def test_a_saved_model_loads_in_safe_mode_with_its_weights(m0_file):
    path, model = m0_file
    x = np.random.default_rng(0).uniform(0, 255, (2, *INPUT)).astype("float32")
    for loaded in (dynzoo.load_model(path), keras.models.load_model(path, safe_mode=True)):
        np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), rtol=0, atol=1e-6)


def _rewrite_config(source, target, edit) -> None:
    with zipfile.ZipFile(source) as z:
        members = {name: z.read(name) for name in z.namelist()}
    members["config.json"] = json.dumps(edit(json.loads(members["config.json"]))).encode()
    with zipfile.ZipFile(target, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)


def test_an_injected_lambda_is_refused(m0_file, tmp_path):
    """A Lambda layer appended to a dynzoo model's file (its function is Python bytecode that loading
    would run) is refused in safe mode; outside it the same file loads, so the injection is real."""
    path, model = m0_file
    doubled = keras.layers.Lambda(lambda t: t * 2.0, name="injected")
    lambda_config = keras.Model(model.input, doubled(model.output)).get_config()["layers"][-1]

    def inject(config):
        config["config"]["layers"].append(lambda_config)
        config["config"]["output_layers"] = [["injected", 0, 0]]
        return config

    tampered = tmp_path / "tampered.keras"
    _rewrite_config(path, tampered, inject)
    with pytest.raises(ValueError, match="lambda"):
        keras.models.load_model(tampered)  # safe_mode=True is Keras' default
    with pytest.raises(ValueError, match=r"tampered\.keras.*lambda"):
        dynzoo.load_model(tampered)
    unsafe = keras.models.load_model(tampered, safe_mode=False)
    x = np.full((1, *INPUT), 100.0, "float32")
    np.testing.assert_allclose(unsafe(x, training=False), 2.0 * model(x, training=False), rtol=1e-6)


def test_load_model_names_what_is_wrong(m0_file, tmp_path):
    path, _ = m0_file
    with pytest.raises(ValueError, match="no such .keras file"):
        dynzoo.load_model(tmp_path / "missing.keras")
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or of another format"):
        dynzoo.load_model(truncated)

    def rename_stem(config):
        stem = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "MicroStem")
        stem["class_name"], stem["registered_name"] = "MicroStemV9", "dynzoo>MicroStemV9"
        return config

    newer = tmp_path / "newer.keras"
    _rewrite_config(path, newer, rename_stem)
    with pytest.raises(ValueError) as e:
        dynzoo.load_model(newer)
    first_line = str(e.value).splitlines()[0]
    assert "MicroStemV9 (module dynzoo.layers.micronet)" in first_line and "not registered" in first_line
    assert "Importing dynzoo" in first_line
