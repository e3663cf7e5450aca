"""Each model family's training: its losses, trainers, callbacks and ``dynzoo train`` hook, one module per
family that trains differently from plain ``fit``. Importing this package registers every hook."""

from dynzoo.train.families import cdb, ddn, drnet, drt

__all__ = ["cdb", "ddn", "drnet", "drt"]
