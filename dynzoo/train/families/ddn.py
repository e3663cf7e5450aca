"""The ``dynzoo train`` hook of the DDN family: ``--task classify`` trains a static twin as it is and refuses
a DDN (it needs the domain batches of ``--task domains``, :mod:`dynzoo.train.domains`)."""

from dynzoo.train.domains import TASK_OPTIONS, prepare_classify
from dynzoo.train.hooks import register_training_hook

register_training_hook("ddn", TASK_OPTIONS, prepare_classify)
