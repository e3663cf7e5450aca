"""The ``dynzoo train`` hook of the DRT family: a DRT network trains as it is, or with ``--task msda``
(multi-source adaptation, :mod:`dynzoo.train.msda`), which owns the family's options."""

from dynzoo.train import msda
from dynzoo.train.hooks import register_training_hook

register_training_hook("drt", msda.OPTIONS, msda.prepare_plain)
