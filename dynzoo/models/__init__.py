"""Model families: each family's builder, the keras.applications-style functions of the named models, and the
serializable blocks. Importing this package registers every named model (``dynzoo.list_models()``)."""

from dynzoo.models.cdb import CDBResNet
from dynzoo.models.ddn import DDN, DomainAwareBlock, FBNetBlock
from dynzoo.models.ddw import DDW
from dynzoo.models.drnet import DRNet, DRNetCell, DRNetL, DRNetLImagenet, DRNetM, DRNetS
from dynzoo.models.drt import DRT, DRTBottleneck
from dynzoo.models.micronet import MicroNet, MicroNetM0, MicroNetM1, MicroNetM2, MicroNetM3
from dynzoo.models.mobilenetv2 import DynamicDense, InvertedResidual, MobileNetV2
from dynzoo.models.resnet import ResNet, ResNetBlock

__all__ = [
    "CDBResNet",
    "DDN",
    "DDW",
    "DRNet",
    "DRNetCell",
    "DRNetL",
    "DRNetLImagenet",
    "DRNetM",
    "DRNetS",
    "DRT",
    "DRTBottleneck",
    "DomainAwareBlock",
    "DynamicDense",
    "FBNetBlock",
    "InvertedResidual",
    "MicroNet",
    "MicroNetM0",
    "MicroNetM1",
    "MicroNetM2",
    "MicroNetM3",
    "MobileNetV2",
    "ResNet",
    "ResNetBlock",
]
