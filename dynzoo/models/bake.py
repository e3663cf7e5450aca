"""Baking: fold frozen dynamic coefficients into a static network.

A dynamic layer that can be baked has ``coefficients(inputs)`` (its per-sample coefficients) and
``static_equivalent(coefficients)`` (the static layer computing it with those coefficients frozen, made
exactly of the same products). :func:`frozen_coefficients` records the coefficients on data (their mean:
the attention-frozen ablation; one sample: that sample's network), :func:`bake` swaps every dynamic
layer for its static equivalent. The baked model has no coefficient branches (no pooling, no FCs, no
per-sample products), so it exports smaller and faster.
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np

from dynzoo._compat import all_layers
from dynzoo.layers.base import SequenceBlock


def _bakeable(layer) -> bool:
    return callable(getattr(layer, "coefficients", None)) and callable(getattr(layer, "static_equivalent", None))


def _slots(model: keras.Model) -> Iterator[tuple[str, object, int | None, keras.layers.Layer]]:
    """(key, container, index, layer) of every bakeable layer: top-level ones (container = model,
    index None) and steps of composite blocks, searched recursively. The key is the layer path,
    ``block3/steps/1``."""

    def walk(prefix, block):
        for i, step in enumerate(block.steps):
            key = f"{prefix}/steps/{i}"
            if _bakeable(step):
                yield key, block, i, step
            elif isinstance(step, SequenceBlock):
                yield from walk(key, step)

    for layer in model.layers:
        if _bakeable(layer):
            yield layer.name, model, None, layer
        elif isinstance(layer, SequenceBlock):
            yield from walk(layer.name, layer)


def frozen_coefficients(model: keras.Model, inputs: np.ndarray, batch_size: int = 64) -> dict[str, list[np.ndarray]]:
    """The mean over ``inputs`` of every bakeable layer's coefficients: ``{path: [array (C,), …]}``."""
    inputs = np.asarray(inputs, "float32")
    if len(inputs) == 0:
        raise ValueError("`inputs` must hold at least one sample.")
    sums: dict[str, list[np.ndarray]] = {}
    originals = {}
    for key, _, _, layer in _slots(model):
        originals[key] = layer

        def recording(x, *args, _key=key, _layer=layer, **kwargs):
            values = type(_layer).coefficients(_layer, x)
            batch = [np.asarray(v).reshape(len(np.asarray(v)), -1).sum(0) for v in values]
            sums[_key] = batch if _key not in sums else [s + b for s, b in zip(sums[_key], batch, strict=False)]
            return type(_layer).call(_layer, x, *args, **kwargs)

        layer.call = recording  # the instance attribute shadows the method during the run
    try:
        for start in range(0, len(inputs), batch_size):
            model(inputs[start : start + batch_size], training=False)
    finally:
        for layer in originals.values():
            del layer.call
    if not sums:
        raise ValueError(f"{model.name} has no layer with dynamic coefficients to freeze.")
    return {key: [s / len(inputs) for s in values] for key, values in sums.items()}


def bake(model: keras.Model, coefficients: dict[str, list[np.ndarray]]) -> keras.Model:
    """A new model in which every bakeable layer named in ``coefficients`` (as
    :func:`frozen_coefficients` names them) is replaced by its static equivalent with those
    coefficients. A composite block holding such a layer becomes a small functional model of its
    steps, so the baked model saves and loads like any Keras model. The weights are copied."""
    source = keras.models.clone_model(model)  # a private copy: the baked model must not share weights
    source.set_weights(model.get_weights())
    known = {key for key, *_ in _slots(source)}
    unknown = sorted(set(coefficients) - known)
    if unknown:
        raise ValueError(f"`coefficients` names layers that {model.name} does not have: {unknown}.")

    def contains(key: str) -> bool:
        return any(k == key or k.startswith(key + "/") for k in coefficients)

    def replay(x, layer, key):
        if key in coefficients:
            return layer.static_equivalent(coefficients[key])(x)
        if isinstance(layer, SequenceBlock) and contains(key):
            return unrolled(layer, key, tuple(x.shape[1:]))(x)
        return layer(x)

    def unrolled(block: SequenceBlock, key: str, input_shape) -> keras.Model:
        inputs = keras.Input(input_shape)
        x = inputs
        for i, step in enumerate(block.steps):
            x = replay(x, step, f"{key}/steps/{i}")
        if block.residual:
            x = keras.layers.Add(name=f"{block.name}_residual")([x, inputs])
        return keras.Model(inputs, x, name=block.name)

    def clone(layer):
        if layer.name in coefficients:
            return layer.static_equivalent(coefficients[layer.name])
        if isinstance(layer, SequenceBlock) and contains(layer.name):
            return unrolled(layer, layer.name, tuple(layer.input.shape[1:]))
        return layer

    return keras.models.clone_model(source, clone_function=clone)


def bake_domain(model: keras.Model, embedding) -> keras.Model:
    """Fold a domain-aware network (DDN, ``[images, domain_embedding]`` inputs) for one domain
    ``embedding`` (D,) into its static network: every layer with ``fold(embedding)`` (the domain-aware
    convs and blocks) becomes the static layer it equals for that domain, the others are copied. The
    result takes the images only and is, layer for layer and op for op, the plain backbone.

    ``model`` must be a chain: each layer takes the previous layer's output (and the embedding).
    """
    from dynzoo.models.ddn import EMBEDDING_INPUT

    images = [t for t in model.inputs if t.name != EMBEDDING_INPUT]
    if len(images) != 1 or len(images) == len(model.inputs):
        raise ValueError(f"`model` {model.name} must take [images, {EMBEDDING_INPUT}] inputs (a DDN model).")
    embedding = np.asarray(embedding, "float32").reshape(-1)
    if embedding.shape[0] != model.get_layer(EMBEDDING_INPUT).output.shape[-1]:
        raise ValueError(
            f"`embedding` has {embedding.shape[0]} values; {model.name} takes "
            f"{model.get_layer(EMBEDDING_INPUT).output.shape[-1]}."
        )
    inputs = keras.Input(images[0].shape[1:], name=images[0].name)
    x = inputs
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if callable(getattr(layer, "fold", None)):
            x = layer.fold(embedding)(x)
        else:
            copy = type(layer).from_config(layer.get_config())
            x = copy(x)
            copy.set_weights(layer.get_weights())
    return keras.Model(inputs, x, name=f"{model.name}_baked")


def reestimate_batchnorm(model: keras.Model, images: np.ndarray, batch_size: int = 64, embedding=None) -> None:
    """Replace the moving statistics of every BatchNormalization of ``model`` by their average over
    ``images`` (the population statistics of one domain, for DDN's one-domain batches): batch statistics in training
    mode, accumulated as a cumulative mean. Nothing else changes. A domain-aware model also takes the
    domain's ``embedding`` (D,)."""
    images = np.asarray(images, "float32")
    if len(images) < 2:
        raise ValueError("`images` must hold at least 2 images to estimate BatchNorm statistics.")
    layers = [l for l in all_layers(model, include_self=False) if isinstance(l, keras.layers.BatchNormalization)]
    momenta = [l.momentum for l in layers]
    try:
        for i, start in enumerate(range(0, len(images) - 1, batch_size)):
            for layer in layers:
                layer.momentum = i / (i + 1)  # moving = mean of the batch statistics seen so far
            batch = images[start : start + batch_size]
            model(batch if embedding is None else [batch, np.tile(embedding, (len(batch), 1))], training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=False):
            layer.momentum = momentum
