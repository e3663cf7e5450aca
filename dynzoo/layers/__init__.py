"""dynzoo layers: every operator is a serializable ``keras.layers.Layer`` (package ``dynzoo``)."""

from dynzoo.layers.base import SequenceBlock, count_madds
from dynzoo.layers.conv import SymmetricConv2D, SymmetricDepthwiseConv2D
from dynzoo.layers.micronet import (
    GroupPointwiseConv,
    MicroBlock,
    MicroFactorizedDepthwise,
    MicroFactorizedPointwise,
    MicroStem,
)
from dynzoo.layers.shift_max import DynamicShiftMax
from dynzoo.layers.shuffle import ChannelShuffle

__all__ = [
    "ChannelShuffle",
    "DynamicShiftMax",
    "GroupPointwiseConv",
    "MicroBlock",
    "MicroFactorizedDepthwise",
    "MicroFactorizedPointwise",
    "MicroStem",
    "SequenceBlock",
    "SymmetricConv2D",
    "SymmetricDepthwiseConv2D",
    "count_madds",
]
