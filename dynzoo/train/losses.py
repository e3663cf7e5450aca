"""The authors' losses: label-smoothed cross-entropy and coupled L2 weight decay."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="dynzoo")
class SmoothedCrossEntropy(keras.losses.Loss):
    """Cross-entropy with the official ``LabelSmoothingLoss`` targets (ε/(N−1) on each wrong class; Keras spreads ε/N).

    The target class gets ``1 − ε`` and each of the other ``N − 1`` classes ``ε / (N − 1)`` (Keras'
    ``label_smoothing`` gives ``ε / N`` to every class instead). Soft targets (mixup) are smoothed the
    same way, which equals the λ-mix of the smoothed losses of the two partners.

    Args:
        label_smoothing: ε in [0, 1).
        from_logits: ``y_pred`` holds logits (True) or probabilities.

    Shapes: ``y_true`` (B, N) one-hot or soft targets, ``y_pred`` (B, N); returns (B,).
    """

    def __init__(
        self, label_smoothing: float = 0.0, from_logits: bool = True, name: str = "smoothed_cross_entropy", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"`label_smoothing` must be in [0, 1), got {label_smoothing!r}.")
        self.label_smoothing = float(label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        if self.label_smoothing:
            eps, classes = self.label_smoothing, y_pred.shape[-1]
            y_true = y_true * (1.0 - eps) + (1.0 - y_true) * (eps / (classes - 1))
        if self.from_logits:
            log_probs = ops.log_softmax(y_pred, axis=-1)
        else:
            log_probs = ops.log(ops.clip(y_pred, keras.backend.epsilon(), 1.0))
        return -ops.sum(y_true * log_probs, axis=-1)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "from_logits": self.from_logits}


def with_coupled_weight_decay(loss: Callable, variables: Sequence, weight_decay: float) -> Callable:
    """``loss + ½·wd·Σ‖w‖²`` over ``variables``: PyTorch SGD's ``weight_decay`` as the authors apply it
    (``wd·w`` joins the gradient and passes through momentum, as the authors' PyTorch SGD ``weight_decay``), on every
    trainable variable, BN's γ/β and biases included. Keras' own ``weight_decay`` is decoupled.

    The penalty joins the per-sample losses, so Keras reduces and scales both alike: under
    ``tf.distribute`` each replica's loss is scaled by 1/replicas before the gradients are summed, and
    the penalty counts once whatever the number of replicas.
    """
    if weight_decay == 0:
        return loss
    per_sample = loss.call if isinstance(loss, keras.losses.Loss) else loss

    def regularized(y_true, y_pred):
        penalty = 0.5 * weight_decay * ops.sum(ops.stack([ops.sum(ops.square(v)) for v in variables]))
        return per_sample(y_true, y_pred) + penalty

    regularized.__name__ = f"{getattr(loss, 'name', 'loss')}_with_l2"
    return regularized
