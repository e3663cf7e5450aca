"""The fused optimizers (dynzoo.train.optimizers) follow Keras' Adam and SGD update for update, keep their
slots and configs, and shrink the training step's graph."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from dynzoo.train.optimizers import FusedAdam, FusedSGD

CASES = [
    (keras.optimizers.Adam, FusedAdam, {"learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.99}),
    (keras.optimizers.SGD, FusedSGD, {"learning_rate": 0.1, "momentum": 0.9}),
    (keras.optimizers.SGD, FusedSGD, {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}),
]


def train(optimizer, steps: int = 5) -> list[np.ndarray]:
    """``steps`` compiled (tf.function) updates of two variables under a non-convex loss; the variables and
    the optimizer's slots after."""
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(size=shape).astype("float32")) for shape in [(3, 4), (4,)]]
    optimizer.build(variables)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(x @ variables[0] + variables[1]) ** 2)
        optimizer.apply_gradients(zip(tape.gradient(loss, [v.value for v in variables]), variables, strict=False))

    for i in range(steps):
        step(tf.constant(np.random.default_rng(i + 1).normal(size=(8, 3)).astype("float32")))
    return [v.numpy() for v in variables] + [s.numpy() for s in optimizer.variables if len(s.shape)]  # + slots


@pytest.mark.parametrize("keras_class, fused_class, kwargs", CASES)
def test_fused_updates_equal_keras(keras_class, fused_class, kwargs):
    expected, got = train(keras_class(**kwargs)), train(fused_class(**kwargs))
    assert len(got) == len(expected)
    start = train(keras_class(**kwargs), steps=0)
    for e, g, s in zip(expected, got, start, strict=False):
        assert np.abs(e - s).max() > 1e-3  # the updates moved every variable and slot
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)  # same rule, float32 rounding apart


def test_the_comparison_tells_a_slightly_different_rule_apart():
    """The tolerance above is no blanket: a first moment decaying at 0.85 instead of 0.8 already fails it."""
    expected = train(keras.optimizers.Adam(**CASES[0][2]))
    got = train(FusedAdam(**{**CASES[0][2], "beta_1": 0.85}))
    assert not np.allclose(got[0], expected[0], rtol=1e-5, atol=1e-6)


def test_compiled_model_saves_and_reloads_with_its_fused_optimizer(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(FusedSGD(0.1, momentum=0.9, nesterov=True), "mse")
    model.fit(np.ones((8, 4)), np.zeros((8, 3)), epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded.optimizer) is FusedSGD and loaded.optimizer.get_config() == model.optimizer.get_config()
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables, strict=False):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_the_fused_step_has_fewer_ops():
    def count(optimizer) -> int:
        variables = [keras.Variable(np.ones((2, 2), "float32")) for _ in range(20)]
        optimizer.build(variables)
        graph = (
            tf.function(lambda: optimizer.apply_gradients([(tf.ones((2, 2)), v) for v in variables]))
            .get_concrete_function()
            .graph
        )
        return len(graph.get_operations())

    keras_ops, fused_ops = count(keras.optimizers.Adam()), count(FusedAdam())
    assert fused_ops < keras_ops / 3, (fused_ops, keras_ops)
