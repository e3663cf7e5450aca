"""What every keras.applications-style builder of dynzoo shares: argument checks, the input and
preprocessing, the pooling/top switch and weight loading."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np

from dynzoo.registry import register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def is_weight_tag(weights) -> bool:
    """A manifest tag (``"imagenet"``, ``"digits"`` …) rather than a path: a plain name, no file."""
    return (
        isinstance(weights, str) and weights.replace("_", "").replace("-", "").isalnum() and not os.path.exists(weights)
    )


def check_application_args(
    *,
    model_name: str,
    input_shape: Sequence[int | None] | None,
    input_tensor,
    include_top: bool,
    weights: str | None,
    pooling: str | None,
    classes: int,
    default_size: int = 224,
    min_size: int = 32,
) -> tuple[int | None, int | None, int]:
    """Validate the common builder arguments; return the (height, width, channels) to build for."""
    if not (weights is None or isinstance(weights, (str, os.PathLike))):
        raise ValueError(
            f"`weights` must be None, a weight tag such as 'imagenet' or the path to a weights file, got {weights!r}."
        )
    if is_weight_tag(weights):
        from dynzoo.weights import get_weights

        entry = get_weights(model_name, weights)  # a ValueError lists the available tags
        if include_top and entry.num_classes is not None and classes != entry.num_classes:
            raise ValueError(
                f"If using `weights='{weights}'` with `include_top=True`, `classes` should be "
                f"{entry.num_classes} (got {classes}). Use `include_top=False` and add your own head to "
                "fine-tune."
            )
    elif weights is not None and not os.path.exists(weights):
        raise ValueError(f"`weights`: no such file {os.fspath(weights)!r}.")
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(f"`classes` must be a positive integer, got {classes!r}.")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` must be None, 'avg' or 'max', got {pooling!r}.")

    if input_shape is not None and input_tensor is not None:
        tensor_shape = tuple(input_tensor.shape[1:])
        if len(tensor_shape) != len(input_shape) or any(
            given is not None and actual is not None and given != actual
            for given, actual in zip(input_shape, tensor_shape, strict=False)
        ):
            raise ValueError(
                f"`input_shape` {tuple(input_shape)} contradicts the shape of `input_tensor` {tensor_shape}; "
                "pass one of them, or shapes that agree."
            )
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        input_shape = (default_size, default_size, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"`input_shape` must be (height, width, channels) (channels last), got {input_shape}.")
    height, width, channels = input_shape
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"`input_shape` needs a known, positive channel count (channels last), got {input_shape}.")
    if weights is not None and channels != 3:
        raise ValueError(
            f"{model_name} with `weights={os.fspath(weights)!r}` takes 3-channel (RGB) input; `input_shape` has "
            f"{channels} channels. Pass `weights=None` to build it for {channels} channels."
        )
    for axis, size in (("height", height), ("width", width)):
        if size is not None and size < min_size:
            raise ValueError(
                f"{model_name}: input {axis} must be at least {min_size}, got {size} (input_shape={input_shape})."
            )
    return height, width, channels


def model_input(input_shape, input_tensor) -> tuple[Any, Any]:
    """(the model's input, the tensor the network starts from), as keras.applications does."""
    if input_tensor is None:
        inputs = keras.Input(shape=input_shape)
        return inputs, inputs
    if not keras.backend.is_keras_tensor(input_tensor):
        inputs = keras.Input(tensor=input_tensor, shape=input_shape)
        return inputs, inputs
    return keras.utils.get_source_inputs(input_tensor)[0], input_tensor


def imagenet_preprocessing(channels: int = 3, name: str = "preprocessing") -> keras.layers.Layer:
    """Map [0, 255] input to ImageNet-normalised values: one multiply and one add per channel.

    RGB gets the ImageNet per-channel mean and std. Other channel counts (grayscale, RGB-D, multispectral
    input of a model built without weights) have no per-channel statistics; every channel then gets the
    RGB channels' average mean and std, so [0, 255] input still lands near zero mean and unit scale."""
    if channels == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = (sum(IMAGENET_MEAN) / 3,) * channels, (sum(IMAGENET_STD) / 3,) * channels
    scale = [1.0 / (255.0 * s) for s in std]
    offset = [-m / s for m, s in zip(mean, std, strict=False)]
    return keras.layers.Rescaling(scale=scale, offset=offset, name=name)


def pool(x, pooling: str | None):
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def load_model_weights(
    model: keras.Model,
    weights: str | os.PathLike | None,
    *,
    model_name: str,
    include_top: bool,
    official_loader: Callable[..., None],
) -> None:
    """Load ``weights`` into ``model``: a weight tag of the manifest (downloaded, converted once and
    cached; see :func:`dynzoo.weights.load_pretrained`), an official PyTorch checkpoint or a Keras file.

    ``official_loader(model, path, include_top=…)`` converts the family's official checkpoints.
    """
    if weights is None:
        return
    if is_weight_tag(weights):
        from dynzoo.weights import load_pretrained

        load_pretrained(model, model_name, weights, include_top=include_top, official_loader=official_loader)
        return
    path = os.fspath(weights)
    if path.endswith((".pth", ".pth.tar", ".pt", ".tar")):
        official_loader(model, path, include_top=include_top)
    elif path.endswith(".weights.h5"):
        model.load_weights(path, skip_mismatch=not include_top)
    else:
        raise ValueError(
            f"`weights`: unknown file type {path!r}; expected an official PyTorch checkpoint "
            "(.pth, .pth.tar) or Keras weights (.weights.h5)."
        )


def finish_application(
    inputs,
    x,
    *,
    model_name: str,
    name: str | None,
    include_top: bool,
    pooling: str | None,
    classifier_activation: str | None,
    weights,
    official_loader: Callable[..., None],
) -> keras.Model:
    """Close a builder: ``x`` is the top's logits (``include_top``) or the last feature map; apply the
    classifier activation or the pooling, make the model and load its weights."""
    if include_top:
        if classifier_activation is not None:
            x = keras.layers.Activation(classifier_activation, name="predictions")(x)
    else:
        x = pool(x, pooling)
    model = keras.Model(inputs, x, name=name or model_name)
    load_model_weights(model, weights, model_name=model_name, include_top=include_top, official_loader=official_loader)
    return model


BOOLEAN_ARGUMENTS = ("include_top", "include_preprocessing")


def _plain_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """NumPy scalars as the Python numbers Keras' layers require (``classes=np.int64(5)``), and the
    switches as real booleans: ``include_preprocessing="no"`` would otherwise count as true."""
    plain = {k: v.item() if isinstance(v, np.generic) else v for k, v in kwargs.items()}
    for key in BOOLEAN_ARGUMENTS:
        if key in plain and not isinstance(plain[key], bool):
            raise ValueError(f"`{key}` must be True or False, got {plain[key]!r}.")
    return plain


FEATURE_LEVELS_DOC = """
    Feature maps (keyword only):
        feature_levels: with ``include_top=False``: the levels L (stride 2^L) whose feature maps the
            model returns, a dict keyed ``"level_<L>"`` (the last map at each stride), e.g. (2, 3, 4, 5) for
            strides 4 to 32; ``dynzoo.feature_levels(name)`` lists a model's levels and channels.
"""
FEATURE_PROBE_SIZE = 256  # a multiple of 32: every level's map is the input divided exactly


def _spatial_outputs(model: keras.Model) -> list[tuple[str, Any]]:
    """(layer name, first output) of the model's layers whose first output is a feature map (B, H, W, C),
    in the model's layer order."""
    found = []
    for layer in model.layers:
        outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        if len(outputs[0].shape) == 4 and not isinstance(layer, keras.layers.InputLayer):
            found.append((layer.name, outputs[0]))
    return found


def feature_levels_of(model: keras.Model) -> dict[int, tuple[str, int]]:
    """Level → (layer name, channels) of a model without top: level L (1 to 5) is the last feature map at
    stride 2^L (H/2^L rounded up, as every strided layer here rounds). The strides are read at a
    ``FEATURE_PROBE_SIZE`` input when the model's own size is not fixed."""
    candidates = _spatial_outputs(model)
    size = tuple(model.inputs[0].shape[1:3])
    if None in size:
        size = (FEATURE_PROBE_SIZE, FEATURE_PROBE_SIZE)
        probe = keras.Model(model.inputs, [tensor for _, tensor in candidates])
        specs = [
            keras.KerasTensor((1, *size, *t.shape[3:]) if i == 0 else (1, *t.shape[1:]), dtype=t.dtype)
            for i, t in enumerate(model.inputs)
        ]
        shapes = [spec.shape for spec in probe.compute_output_spec(specs if len(specs) > 1 else specs[0])]
    else:
        shapes = [tensor.shape for _, tensor in candidates]
    levels: dict[int, tuple[str, int]] = {}
    for (name, _), shape in zip(candidates, shapes, strict=False):
        for level in range(1, 6):
            if tuple(shape[1:3]) == tuple(-(-s // 2**level) for s in size):
                levels[level] = (name, shape[-1])
    return dict(sorted(levels.items()))


def feature_extractor(model: keras.Model, levels: Sequence[int]) -> keras.Model:
    """A model with the same inputs whose outputs are the feature maps of ``levels`` (stride 2^level), a
    dict keyed ``"level_<L>"``, as detection and segmentation heads take a backbone."""
    available = feature_levels_of(model)
    if (
        isinstance(levels, (str, bytes))
        or not isinstance(levels, Sequence)
        or not levels
        or any(isinstance(level, bool) or not isinstance(level, int) for level in levels)
    ):
        raise ValueError(
            f"`feature_levels` must be a sequence of levels (integers), got {levels!r}; "
            f"{model.name} has levels {sorted(available)}."
        )
    missing = [level for level in levels if level not in available]
    if missing:
        raise ValueError(
            f"`feature_levels`: {model.name} has no level {missing} (level L = stride 2^L); "
            f"its levels are {sorted(available)}."
        )
    outputs = {f"level_{level}": model.get_layer(available[level][0]).output for level in levels}
    outputs = {key: value[0] if isinstance(value, (list, tuple)) else value for key, value in outputs.items()}
    return keras.Model(model.inputs if len(model.inputs) > 1 else model.inputs[0], outputs, name=model.name)


def named_builder(
    family_builder: Callable[..., keras.Model],
    model_name: str,
    function_name: str | None = None,
    summary: str | None = None,
) -> Callable[..., keras.Model]:
    """The keras.applications-style builder of one named model: ``family_builder(model_name, **kwargs)``
    with the family builder's signature less its first parameter, ``function_name`` (default: the
    CamelCase of ``model_name``) and a docstring opening with ``summary`` (default ``model_name``)."""

    def build(*, feature_levels: Sequence[int] | None = None, **kwargs) -> keras.Model:
        if feature_levels is None:
            return family_builder(model_name, **_plain_arguments(kwargs))
        if kwargs.get("include_top", True) or kwargs.get("pooling") is not None:
            raise ValueError("`feature_levels` needs `include_top=False` and `pooling=None`: it returns feature maps.")
        return feature_extractor(family_builder(model_name, **_plain_arguments(kwargs)), feature_levels)

    signature = inspect.signature(family_builder)
    levels = inspect.Parameter(
        "feature_levels", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="Sequence[int] | None"
    )
    build.__signature__ = signature.replace(parameters=[*list(signature.parameters.values())[1:], levels])
    build.__name__ = build.__qualname__ = function_name or "".join(p.capitalize() for p in model_name.split("_"))
    build.__doc__ = f"{summary or model_name}." + (family_builder.__doc__ or "").split("\n", 1)[1] + FEATURE_LEVELS_DOC
    build.family_builder = family_builder  # the family's builder, which dynzoo.models exports too
    return build


def register_family(
    family: str,
    family_builder: Callable[..., keras.Model],
    models: Mapping[str, Mapping[str, Any]],
    describe: Callable[[str, Mapping[str, Any]], str],
    *,
    function_name: Callable[[str], str] | None = None,
    summary: Callable[[str, Mapping[str, Any]], str] | None = None,
) -> dict[str, Callable[..., keras.Model]]:
    """Register every named model of a family, each name written once (in its ``zoo_configs`` file).

    Args:
        family: the family's registry name (``"micronet"``).
        family_builder: ``family_builder(model_name, **kwargs)``, the family's builder.
        models: model name → its configuration; the ``reference`` figures it holds go to the registry.
        describe: ``describe(name, config)``, the one-line description that ``dynzoo list`` shows.
        function_name: ``function_name(name)``, the builder's ``__name__`` (default: the CamelCase name).
        summary: ``summary(name, config)``, the first line of the builder's docstring (default: the name).

    Returns:
        model name → its keras.applications-style builder (:func:`named_builder`).
    """
    builders = {}
    for name, config in models.items():
        builders[name] = named_builder(
            family_builder,
            name,
            function_name(name) if function_name else None,
            summary(name, config) if summary else None,
        )
        register_model(
            name, builders[name], family=family, description=describe(name, config), reference=config.get("reference")
        )
    return builders


def no_official_checkpoint(family: str, hint: str = "pass Keras `.weights.h5` weights") -> Callable[..., None]:
    """The ``official_loader`` of a family whose authors released no checkpoint: it refuses the file with
    ``hint`` (what to pass instead)."""

    def refuse(model: keras.Model, path: str, include_top: bool = True) -> None:
        raise ValueError(f"`weights`: {family} has no released official checkpoint to convert ({path!r}); {hint}.")

    return refuse
