"""dynzoo layers: every operator is a serializable ``keras.layers.Layer`` (package ``dynzoo``)."""

from dynzoo.layers.base import BatchNormalization, SequenceBlock, count_madds
from dynzoo.layers.cdb import CDBBlock, ContextAwareGroupController, GroupGate  # noqa: F401
from dynzoo.layers.conv import SymmetricConv2D, SymmetricDepthwiseConv2D
from dynzoo.layers.covnorm import CovNormAdapter  # noqa: F401
from dynzoo.layers.dcd import DCDConv2D, DCDDense
from dynzoo.layers.domain import DomainAwareConv2D, DomainEmbeddings, StreamingDomainEmbedding  # noqa: F401
from dynzoo.layers.dynamic_conv import DynamicConv2D, TemperatureAnnealing
from dynzoo.layers.micronet import (
    GroupPointwiseConv,
    MicroBlock,
    MicroFactorizedDepthwise,
    MicroFactorizedPointwise,
    MicroStem,
)
from dynzoo.layers.residual_transfer import DynamicResidualConv2D  # noqa: F401
from dynzoo.layers.routing import CandidateOp, FactorizedReduce, GumbelTemperatureSchedule, RouterNet  # noqa: F401
from dynzoo.layers.shift_max import DynamicShiftMax
from dynzoo.layers.shuffle import ChannelShuffle
from dynzoo.layers.wiring import Router, WiredStage  # noqa: F401

__all__ = [
    "BatchNormalization",
    "ChannelShuffle",
    "DCDConv2D",
    "DCDDense",
    "DynamicConv2D",
    "DynamicShiftMax",
    "GroupPointwiseConv",
    "MicroBlock",
    "MicroFactorizedDepthwise",
    "MicroFactorizedPointwise",
    "MicroStem",
    "SequenceBlock",
    "SymmetricConv2D",
    "SymmetricDepthwiseConv2D",
    "TemperatureAnnealing",
    "count_madds",
]
