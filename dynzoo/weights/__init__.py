"""Weights: a safe reader for PyTorch checkpoints, converters into dynzoo models, pretrained files."""

from dynzoo.weights.convert import assign_state_dict, load_official_checkpoint, official_targets
from dynzoo.weights.pth import CheckpointError, UnsafeCheckpointError, load_pth, state_dict_from


def pretrained_file(model_name: str, tag: str):
    """Path of the pretrained weights ``tag`` of ``model_name``, downloaded and converted if needed."""
    raise NotImplementedError(
        f"pretrained weights ({model_name}:{tag}) cannot be downloaded yet; pass `weights=` the path of "
        "an official checkpoint instead."
    )


__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "assign_state_dict",
    "load_official_checkpoint",
    "load_pth",
    "official_targets",
    "pretrained_file",
    "state_dict_from",
]
