"""The private Keras APIs dynzoo uses, in one place, each with why.

Keras 3 has no public way to do these; when a Keras release moves one, this module is the only one to
change. The bottom of dynzoo's layers: it imports Keras and nothing of dynzoo.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import keras


def all_layers(layer: keras.layers.Layer, include_self: bool = True, recursive: bool = True) -> list:
    """``layer`` and the layers nested in it, outermost first (``Layer._flatten_layers``): ``model.layers``
    lists the top level only, and the export and training passes must reach layers inside blocks."""
    return list(layer._flatten_layers(include_self=include_self, recursive=recursive))


def compiled_loss(model: keras.Model) -> Callable | None:
    """The loss that ``compile`` gave ``model`` (``Model._compile_loss``), or None: the family trainers'
    ``compute_loss`` adds their terms to it, with the loss weights and regularisation ``compile`` set."""
    return model._compile_loss


def functional_class() -> type:
    """Keras' ``Functional`` model class (``keras.src.models.functional``): ``clone_model``'s
    ``call_function`` applies only to functional models, which the QAT graph rewrite needs."""
    from keras.src.models.functional import Functional

    return Functional


def snake_case(name: str) -> str:
    """Keras' own snake-casing of class names (``keras.src.utils.naming``), which its tensors' names carry."""
    from keras.src.utils.naming import to_snake_case

    return to_snake_case(name)


def tensorflow_trainer() -> ModuleType:
    """Keras' TensorFlow trainer module (``keras.src.backend.tensorflow.trainer``), whose per-replica
    reduction ``dynzoo.train.distribute`` replaces under ``MultiWorkerMirroredStrategy``."""
    from keras.src.backend.tensorflow import trainer

    return trainer
