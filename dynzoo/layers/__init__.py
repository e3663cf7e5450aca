"""dynzoo layers: every operator is a serializable ``keras.layers.Layer`` (package ``dynzoo``), exported here with
the callbacks and embeddings that go with them."""

from dynzoo.layers.base import BatchNormalization, SequenceBlock, count_madds
from dynzoo.layers.cdb import CDBBlock, ContextAwareGroupController, GroupBranch, GroupGate
from dynzoo.layers.conv import SymmetricConv2D, SymmetricDepthwiseConv2D
from dynzoo.layers.covnorm import CovNormAdapter
from dynzoo.layers.dcd import DCDConv2D, DCDDense
from dynzoo.layers.domain import DomainAwareConv2D, DomainEmbeddings, StreamingDomainEmbedding
from dynzoo.layers.dynamic_conv import DynamicConv2D, TemperatureAnnealing
from dynzoo.layers.micronet import (
    GroupPointwiseConv,
    MicroBlock,
    MicroFactorizedDepthwise,
    MicroFactorizedPointwise,
    MicroStem,
)
from dynzoo.layers.residual_transfer import DynamicResidualConv2D
from dynzoo.layers.routing import CandidateOp, FactorizedReduce, GumbelTemperatureSchedule, ReLUConvBN, RouterNet
from dynzoo.layers.shift_max import DynamicShiftMax, StaticShiftMax
from dynzoo.layers.shuffle import ChannelShuffle
from dynzoo.layers.wiring import Router, WiredStage

__all__ = [
    "BatchNormalization",
    "CDBBlock",
    "CandidateOp",
    "ChannelShuffle",
    "ContextAwareGroupController",
    "CovNormAdapter",
    "DCDConv2D",
    "DCDDense",
    "DomainAwareConv2D",
    "DomainEmbeddings",
    "DynamicConv2D",
    "DynamicResidualConv2D",
    "DynamicShiftMax",
    "FactorizedReduce",
    "GroupBranch",
    "GroupGate",
    "GroupPointwiseConv",
    "GumbelTemperatureSchedule",
    "MicroBlock",
    "MicroFactorizedDepthwise",
    "MicroFactorizedPointwise",
    "MicroStem",
    "ReLUConvBN",
    "Router",
    "RouterNet",
    "SequenceBlock",
    "StaticShiftMax",
    "StreamingDomainEmbedding",
    "SymmetricConv2D",
    "SymmetricDepthwiseConv2D",
    "TemperatureAnnealing",
    "WiredStage",
    "count_madds",
]
