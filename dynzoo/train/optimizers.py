"""Adam and SGD with momentum whose per-variable update is one fused TensorFlow kernel.

Keras' TensorFlow optimizers build each variable's update from a dozen element-wise ops (Adam: two powers,
casts, the moment updates, a square root, the division). The dynamic networks hold hundreds of small
variables (DRNet-S: 787, one BatchNorm per candidate branch), so TensorFlow traced and instantiated
thousands of such ops before the first training step: the first step of a DRNet-S at 32×32 took 88 s
with Keras' Adam and 43 s with this one (``benchmarks/fused_optimizers.py``; the steady steps take the
same time). ``ResourceApplyAdam`` and ``ResourceApplyKerasMomentum`` compute Keras' own update rules (the
Keras-style momentum, Nesterov included) in one kernel per variable.

The fused path is taken for float32 variables outside a distribution strategy (a mirrored strategy's
per-replica updates keep Keras' ops); AMSGrad falls back to Keras as well. Slots, checkpoints,
``get_config`` and serialisation are Keras' own: a saved optimizer reloads as these classes. The hook,
``_backend_update_step``, is Keras' private per-backend update; tests/test_optimizers.py fails if Keras
stops calling it (the step's op count) or computes another rule (the updates).
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _fusable(optimizer, variables) -> bool:
    return (
        not tf.distribute.has_strategy()
        and not getattr(optimizer, "amsgrad", False)
        and all(v.dtype == "float32" for v in variables)
    )


def _handle(variable):
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


@keras.saving.register_keras_serializable(package="dynzoo")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` (same arguments, slots and update rule) with one fused kernel per variable."""

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if not _fusable(self, trainable_variables):
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1, beta_2 = tf.cast(self.beta_1, tf.float32), tf.cast(self.beta_2, tf.float32)
        shared = dict(
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, tf.float32),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, tf.float32),
        )
        for grad, variable in zip(grads, trainable_variables, strict=False):
            index = self._get_variable_index(variable)
            tf.raw_ops.ResourceApplyAdam(
                var=_handle(variable),
                m=_handle(self._momentums[index]),
                v=_handle(self._velocities[index]),
                grad=tf.convert_to_tensor(grad),
                **shared,
            )


@keras.saving.register_keras_serializable(package="dynzoo")
class FusedSGD(keras.optimizers.SGD):
    """``keras.optimizers.SGD`` (same arguments, slots and update rule) with one fused kernel per variable
    when it has momentum."""

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if not self.momentum or not _fusable(self, trainable_variables):
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        lr = tf.cast(learning_rate, tf.float32)
        momentum = tf.cast(self.momentum, tf.float32)
        for grad, variable in zip(grads, trainable_variables, strict=False):
            accumulator = self.momentums[self._get_variable_index(variable)]
            tf.raw_ops.ResourceApplyKerasMomentum(
                var=_handle(variable),
                accum=_handle(accumulator),
                lr=lr,
                grad=tf.convert_to_tensor(grad),
                momentum=momentum,
                use_nesterov=self.nesterov,
            )
