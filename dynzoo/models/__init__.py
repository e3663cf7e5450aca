"""Model families; importing this package registers every named model."""

from dynzoo.models.micronet import MicroNet, MicroNetM0, MicroNetM1, MicroNetM2, MicroNetM3

__all__ = ["MicroNet", "MicroNetM0", "MicroNetM1", "MicroNetM2", "MicroNetM3"]
