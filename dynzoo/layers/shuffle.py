"""ShuffleNet channel shuffles as RESHAPE → TRANSPOSE → RESHAPE (TFLite builtins that XNNPACK runs, exact in
every quantization mode), and channel permutations as one 1×1 convolution for int8 (:func:`gathered`)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from dynzoo.layers.base import PACKAGE, channels_of, check_divisible, check_int, in_integer_export_form

# C up to which the full-integer export form moves channels (the shift to partners, and a channel shuffle
# that follows) with one 1×1 convolution by a 0/1 matrix instead of slices, concatenations and transposes
# (:func:`gathered`): C² multiply-adds per pixel and output map in XNNPACK's int8 GEMM, exact in int8 (each
# output is one input times 1). MicroNet-M0 and M3 int8, side by side (benchmarks/deploy_latency.py), against
# this width: without these convolutions 1.79× and 1.38× the time, up to 32 channels 1.17× and 1.34×, up to
# 64 1.02× and 1.07×, at every width 1.04× and 1.33× (M3's 7×7×576 layers).
PERMUTATION_MAX_CHANNELS = 128


def gathered(x, index: Sequence[int]):
    """``x[..., index]`` (any length; channels may repeat) as one 1×1 convolution with a constant 0/1 kernel,
    the way the full-integer export form moves channels (:data:`PERMUTATION_MAX_CHANNELS`)."""
    index = np.asarray(index)
    kernel = np.zeros((1, 1, x.shape[-1], len(index)), "float32")
    kernel[0, 0, index, np.arange(len(index))] = 1.0
    return ops.conv(x, ops.convert_to_tensor(kernel))


def shuffle_indices(channels: int, groups: int) -> np.ndarray:
    """Gather indices of ShuffleNet's channel shuffle: output ``j·g + i`` takes input ``i·(C/g) + j``."""
    per_group = channels // groups
    return np.arange(channels).reshape(groups, per_group).T.reshape(-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelShuffle(keras.layers.Layer):
    """ShuffleNet channel shuffle, or several applied in a row.

    For ``groups=g`` and C channels (thesis §4.2.1, the permutation Φ of eq. 4.1), output channel
    ``j·g + i`` is input channel ``i·(C/g) + j``: the (g, C/g) channel grid is transposed. A sequence
    ``groups=(g1, g2, …)`` applies the shuffles in that order (:attr:`permutation` is the composed
    gather index). Each shuffle exports as RESHAPE → TRANSPOSE → RESHAPE: XNNPACK runs those, not a
    GATHER, which makes MicroNet-M0 and M3 a quarter and a third faster than one GATHER per layer
    (``benchmarks/micronet_latency.py``). In the full-integer export form, up to
    :data:`PERMUTATION_MAX_CHANNELS` channels, it is one 1×1 convolution by the permutation matrix
    (:func:`gathered`; XNNPACK's int8 TRANSPOSE is several times slower than its int8 GEMM here).

    Args:
        groups: an int, or a sequence of ints, each dividing the channel count.

    Input/output: (B, …, C) → (B, …, C).
    """

    integer_export_form = True  # a 1×1 convolution up to PERMUTATION_MAX_CHANNELS (base.has_integer_export_form)

    def __init__(self, groups: int | Sequence[int], **kwargs):
        super().__init__(**kwargs)
        groups = [groups] if isinstance(groups, int) and not isinstance(groups, bool) else list(groups)
        if not groups:
            raise ValueError("`groups` must be an int or a non-empty sequence of ints, got [].")
        self.groups = [check_int("groups", g) for g in groups]

    def build(self, input_shape):
        self.channels = channels_of(input_shape, "ChannelShuffle")
        for g in self.groups:
            check_divisible("channels", self.channels, g, "groups")

    @property
    def permutation(self) -> np.ndarray:
        """The composed gather index: ``output[..., k] = input[..., permutation[k]]``."""
        index = np.arange(self.channels)
        for g in self.groups:
            index = index[shuffle_indices(self.channels, g)]
        return index

    def call(self, inputs):
        if in_integer_export_form() and len(inputs.shape) == 4 and self.channels <= PERMUTATION_MAX_CHANNELS:
            return gathered(inputs, self.permutation)
        lead = tuple(ops.shape(inputs)[:-1])
        x = inputs
        for g in self.groups:
            x = ops.reshape(x, (*lead, g, self.channels // g))
            x = ops.reshape(ops.swapaxes(x, -1, -2), (*lead, self.channels))
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "groups": list(self.groups)}
