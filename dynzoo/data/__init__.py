"""Input data: the offline default (scikit-learn's handwritten digits, real data shipped inside the
scikit-learn package: no internet needed), image folders and TensorFlow Datasets by name, and the
``tf.data`` pipelines that feed training and evaluation."""

from dynzoo.data.digits import DIGITS_LABELS, digits_arrays
from dynzoo.data.pipeline import (
    Augmentation,
    eval_dataset,
    resize_and_center_crop,
    train_dataset,
)
from dynzoo.data.sources import Source, open_source

__all__ = [
    "DIGITS_LABELS",
    "Augmentation",
    "Source",
    "digits_arrays",
    "eval_dataset",
    "open_source",
    "resize_and_center_crop",
    "train_dataset",
]
