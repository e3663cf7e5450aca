"""Channel permutations as one constant GATHER (a TFLite builtin in every quantization mode)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import keras
from keras import ops

from dynzoo.layers.base import PACKAGE, channels_of, check_divisible, check_int


def shuffle_indices(channels: int, groups: int) -> np.ndarray:
    """Gather indices of ShuffleNet's channel shuffle: output ``j·g + i`` takes input ``i·(C/g) + j``."""
    per_group = channels // groups
    return np.arange(channels).reshape(groups, per_group).T.reshape(-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelShuffle(keras.layers.Layer):
    """ShuffleNet channel shuffle, or several applied in a row, as a single gather.

    For ``groups=g`` and C channels (thesis §4.2.1, the permutation Φ of eq. 4.1), output channel
    ``j·g + i`` is input channel ``i·(C/g) + j``: the (g, C/g) channel grid is transposed. A sequence
    ``groups=(g1, g2, …)`` applies the shuffles in that order; they are composed into one index, so
    the exported graph holds one GATHER however many shuffles the official code chains.

    Args:
        groups: an int, or a sequence of ints, each dividing the channel count.

    Input/output: (B, H, W, C) → (B, H, W, C).
    """

    def __init__(self, groups: int | Sequence[int], **kwargs):
        super().__init__(**kwargs)
        groups = [groups] if isinstance(groups, int) and not isinstance(groups, bool) else list(groups)
        if not groups:
            raise ValueError("`groups` must be an int or a non-empty sequence of ints, got [].")
        self.groups = [check_int("groups", g) for g in groups]

    def build(self, input_shape):
        channels = channels_of(input_shape, "ChannelShuffle")
        index = np.arange(channels)
        for g in self.groups:
            check_divisible("channels", channels, g, "groups")
            index = index[shuffle_indices(channels, g)]
        self.index = index.astype("int32")

    def call(self, inputs):
        return ops.take(inputs, self.index, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "groups": list(self.groups)}
