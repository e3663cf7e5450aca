"""``dynzoo.layers`` and ``dynzoo.models`` export everything a user saves, loads or builds: every serializable
class of their modules, every family builder and every named keras.applications-style function."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import keras
import pytest

import dynzoo
import dynzoo.layers
import dynzoo.models
from dynzoo.registry import get_entry


def serializable_classes(package) -> dict[str, type]:
    """name → class of every class registered with Keras from a module of ``package``."""
    prefix = package.__name__ + "."
    return {
        cls.__name__: cls
        for cls in keras.saving.get_custom_objects().values()
        if inspect.isclass(cls) and cls.__module__.startswith(prefix)
    }


@pytest.mark.parametrize("package", [dynzoo.layers, dynzoo.models], ids=["layers", "models"])
def test_every_serializable_class_is_exported(package):
    classes = serializable_classes(package)
    assert len(classes) >= (25 if package is dynzoo.layers else 7)  # the modules were imported
    missing = sorted(set(classes) - set(package.__all__))
    assert not missing, f"{package.__name__}.__all__ lacks {missing}"
    for name, cls in classes.items():
        assert getattr(package, name) is cls


@pytest.mark.parametrize("package", [dynzoo.layers, dynzoo.models], ids=["layers", "models"])
def test_all_names_only_what_exists(package):
    assert len(package.__all__) == len(set(package.__all__))
    for name in package.__all__:
        assert hasattr(package, name), f"{package.__name__}.__all__ names {name}, which it does not define"


def test_every_family_builder_and_named_function_is_exported():
    families = {get_entry(name).builder.family_builder for name in dynzoo.list_models()}
    assert {f.__name__ for f in families} >= {"MicroNet", "MobileNetV2", "ResNet", "DRNet", "CDBResNet", "DDW", "DDN"}
    for builder in families:
        assert builder.__name__ in dynzoo.models.__all__ and getattr(dynzoo.models, builder.__name__) is builder
    # module-level named functions (keras.applications style: dynzoo.models.MicroNetM0(...))
    registered = {id(get_entry(name).builder) for name in dynzoo.list_models()}
    for info in pkgutil.iter_modules(dynzoo.models.__path__):
        module = importlib.import_module(f"dynzoo.models.{info.name}")
        for name, value in vars(module).items():
            if id(value) in registered:
                assert name in dynzoo.models.__all__, f"dynzoo.models does not export {name}"
                assert getattr(dynzoo.models, name) is value
