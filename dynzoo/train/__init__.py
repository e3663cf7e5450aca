"""Training with the papers' recipes: ``dynzoo train`` (absl flags), :func:`train` from Python.

>>> from dynzoo.train import TrainConfig, train
>>> result = train(TrainConfig(model="micronet_m0", dataset="digits", overrides={"epochs": 3}))
"""

from dynzoo.train import families  # registers each family's `dynzoo train` hook
from dynzoo.train.recipes import Recipe, get_recipe, recipe_names
from dynzoo.train.trainer import TrainConfig, TrainResult, summary_table, train

__all__ = ["Recipe", "families", "TrainConfig", "TrainResult", "get_recipe", "recipe_names", "summary_table", "train"]
