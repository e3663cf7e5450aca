"""Model families; importing this package registers every named model."""

from dynzoo.models.cdb import CDBResNet  # noqa: F401
from dynzoo.models.ddn import DDN  # noqa: F401
from dynzoo.models.ddw import DDW  # noqa: F401
from dynzoo.models.drnet import DRNet  # noqa: F401
from dynzoo.models.drt import DRT  # noqa: F401
from dynzoo.models.micronet import (
    MicroNet,
    MicroNetM0,
    MicroNetM1,
    MicroNetM2,
    MicroNetM3,
)
from dynzoo.models.mobilenetv2 import MobileNetV2
from dynzoo.models.resnet import ResNet

__all__ = ["MicroNet", "MicroNetM0", "MicroNetM1", "MicroNetM2", "MicroNetM3", "MobileNetV2", "ResNet"]
