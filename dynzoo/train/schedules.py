"""The papers' learning-rate schedules, updated per iteration."""

from __future__ import annotations

import math

import keras
from keras import ops

from dynzoo.train.recipes import SCHEDULES


@keras.saving.register_keras_serializable(package="dynzoo")
class RecipeSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then cosine, step or exponential decay, evaluated at every iteration.

    With ``w`` warm-up and ``T`` total iterations (``it`` counts from 0, as the official ``main.py``):

    * warm-up (``it < w``): ``lr·it/w``;
    * ``cos``: ``lr·(1 + cos(π·(it − w)/(T − w)))/2`` (MicroNet, DCD-MobileNetV2);
    * ``step``: ``lr·gamma^k``, ``k`` the number of ``milestones`` (epochs) reached (DCD-ResNet);
    * ``exp``: ``lr·gamma^epoch`` (DRNets' ×0.97 per epoch).

    Args:
        lr: peak learning rate.
        steps_per_epoch: iterations per epoch.
        epochs: training epochs (``T = epochs·steps_per_epoch``).
        schedule: ``cos``, ``step`` or ``exp``.
        warmup_epochs: warm-up length in epochs (may be fractional).
        milestones: epochs at which ``step`` multiplies by ``gamma``.
        gamma: the decay factor of ``step`` and ``exp``.
    """

    def __init__(
        self,
        lr: float,
        steps_per_epoch: int,
        epochs: int,
        schedule: str = "cos",
        warmup_epochs: float = 0.0,
        milestones=(),
        gamma: float = 0.1,
    ):
        if schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {list(SCHEDULES)}, got {schedule!r}.")
        if steps_per_epoch < 1 or epochs < 1:
            raise ValueError(f"`steps_per_epoch` and `epochs` must be >= 1, got {steps_per_epoch}, {epochs}.")
        self.lr = float(lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.schedule = schedule
        self.warmup_epochs = float(warmup_epochs)
        self.milestones = tuple(int(m) for m in milestones)
        self.gamma = float(gamma)

    def __call__(self, step):
        it = ops.cast(step, "float32")
        warmup = self.warmup_epochs * self.steps_per_epoch
        total = float(self.epochs * self.steps_per_epoch)
        if self.schedule == "cos":
            progress = ops.clip((it - warmup) / max(total - warmup, 1.0), 0.0, 1.0)
            decayed = self.lr * 0.5 * (1.0 + ops.cos(math.pi * progress))
        elif self.schedule == "step":
            reached = sum(ops.cast(it >= m * self.steps_per_epoch, "float32") for m in self.milestones)
            decayed = self.lr * ops.power(self.gamma, reached)
        else:
            decayed = self.lr * ops.power(self.gamma, ops.floor(it / self.steps_per_epoch))
        if warmup <= 0:
            return decayed
        return ops.where(it < warmup, self.lr * it / warmup, decayed)

    def get_config(self):
        return {
            "lr": self.lr,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "schedule": self.schedule,
            "warmup_epochs": self.warmup_epochs,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
        }
