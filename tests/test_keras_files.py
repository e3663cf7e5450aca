""".keras files: every registered model loads in Keras' safe mode, Python code in a file is refused, and
``dynzoo.load_model`` names what is wrong with a file."""

from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pytest

import dynzoo

INPUT = (32, 32, 3)


def _small(name: str) -> keras.Model:
    shape = None if "lenet" in name else (64, 64, 3)  # LeNet takes its digits' size
    return dynzoo.create_model(name, weights=None, input_shape=shape)


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
def built() -> dict[str, tuple[dict, int]]:
    """(serialized config, as in a ``.keras`` file's config.json; parameter count) of every registered model."""
    result = {}
    for name in dynzoo.list_models():
        model = _small(name)
        result[name] = keras.saving.serialize_keras_object(model), model.count_params()
        keras.backend.clear_session()
    return result


@pytest.fixture(scope="module")
def configs(built) -> dict[str, dict]:
    return {name: config for name, (config, _) in built.items()}


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
        assert rebuilt.count_params() == built[name][1], name
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
