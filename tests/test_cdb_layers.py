"""CDB layers: controller, gate (noise, straight-through, inference), the gated block (masked sum, identity
when off, real skipping, equality with the ResNet bottleneck), MAdds, serialization, argument checks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dynzoo.layers.base import count_madds
from dynzoo.layers.cdb import (
    CDBBlock,
    ContextAwareGroupController,
    GroupBranch,
    GroupGate,
    group_width,
)
from dynzoo.models.resnet import ResNetBlock

RNG = np.random.default_rng(0)


def features(shape=(3, 8, 8, 16)):
    return np.abs(RNG.normal(size=shape)).astype("float32")  # block inputs follow a ReLU


def set_gates(block: CDBBlock, on):
    """Force the block's gates: zero gate kernel, biases favouring "on" where ``on`` is true."""
    kernel, _ = block.controller.logits_fc.get_weights()
    bias = np.stack([np.where(on, -5.0, 5.0), np.where(on, 5.0, -5.0)], -1).reshape(-1).astype("float32")
    block.controller.logits_fc.set_weights([np.zeros_like(kernel), bias])


def test_controller_follows_eqs_4_to_6():
    x, h_prev = features(), RNG.normal(size=(3, 32)).astype("float32")
    ctrl = ContextAwareGroupController(groups=3, hidden=32)
    logits, h = ctrl([x, h_prev])
    assert tuple(logits.shape) == (3, 3, 2) and tuple(h.shape) == (3, 32)
    (w1, b1), (w2, b2), (w3, b3) = (layer.get_weights() for layer in (ctrl.embed, ctrl.history, ctrl.logits_fc))
    relu = lambda v: np.maximum(v, 0)
    expected_h = relu(x.mean(axis=(1, 2)) @ w1 + b1) + relu(h_prev @ w2 + b2)
    np.testing.assert_allclose(h, expected_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, (expected_h @ w3 + b3).reshape(3, 3, 2), rtol=1e-5, atol=1e-6)
    # The first controller has no history: h_1 = V_0, no W2.
    first = ContextAwareGroupController(groups=2)
    _, h1 = first(x)
    w1, b1 = first.embed.get_weights()
    np.testing.assert_allclose(h1, relu(x.mean(axis=(1, 2)) @ w1 + b1), rtol=1e-5, atol=1e-6)
    assert not first.history.built
    assert ctrl.compute_madds([x.shape, h_prev.shape]) == 16 * 32 + 32 * 32 + 32 * 6
    assert first.compute_madds(x.shape) == 16 * 32 + 32 * 4
    # "on" is favoured at initialisation.
    np.testing.assert_array_equal(first.logits_fc.get_weights()[1], [0.0, 1.0, 0.0, 1.0])


def test_gate_inference_is_deterministic_training_is_noisy_with_straight_through_gradient():
    # its own generator: the logits must not depend on which tests ran before in this process
    logits = tf.constant(np.random.default_rng(7).normal(size=(64, 4, 2)).astype("float32"))
    gate = GroupGate(seed=1)
    inference = gate(logits, training=False).numpy()
    np.testing.assert_array_equal(inference, (logits[..., 1] > logits[..., 0]).numpy().astype("float32"))
    np.testing.assert_array_equal(gate(logits, training=False).numpy(), inference)
    first, second = gate(logits, training=True).numpy(), gate(logits, training=True).numpy()
    assert set(np.unique(first)) <= {0.0, 1.0}
    assert (first != inference).any() and (first != second).any()  # N(0, 1) noise flips close calls
    with tf.GradientTape() as tape:
        tape.watch(logits)
        s = gate(logits, training=True)
        total = tf.reduce_sum(s)
    grad = tape.gradient(total, logits).numpy()
    # d s / d g_on = p(1 − p) > 0, d s / d g_off = −p(1 − p): the softmax's gradient passes straight through.
    assert (grad[..., 1] > 0).all()
    np.testing.assert_allclose(grad[..., 0], -grad[..., 1], rtol=1e-5, atol=1e-6)  # float32 round-off of ≤ 0.25
    assert (GroupGate(noise_stddev=0.0)(logits, training=True).numpy() == inference).all()


def test_block_equals_masked_sum_of_groups_and_identity_when_all_off():
    x, h_prev = features(), RNG.normal(size=(3, 32)).astype("float32")
    block = CDBBlock("bottleneck", width=4, out_channels=16, groups=3)
    block([x, h_prev])
    set_gates(block, [True, False, True])
    y, _h, gates = block([x, h_prev], training=False)
    np.testing.assert_array_equal(gates, [[1, 0, 1]] * 3)
    expected = x + block.branches[0](x, training=False) + block.branches[2](x, training=False)
    np.testing.assert_allclose(y, np.maximum(expected, 0), rtol=1e-5, atol=1e-5)
    set_gates(block, [False] * 3)
    y, _, _ = block([x, h_prev], training=False)
    np.testing.assert_allclose(y, x)  # identity shortcut, input ≥ 0


def test_switched_off_groups_are_not_computed_at_inference():
    x = features((1, 8, 8, 16))
    block = CDBBlock("basic", width=8, out_channels=16, groups=2)
    block(x)
    calls = [0, 0]
    for n, branch in enumerate(block.branches):
        original = branch.call

        def counted(inputs, training=None, n=n, original=original):
            calls[n] += 1
            return original(inputs, training=training)

        branch.call = counted
    set_gates(block, [True, False])
    block(x, training=False)
    assert calls == [1, 0]
    masked = CDBBlock.from_config({**block.get_config(), "conditional": False})
    masked(x)
    masked.set_weights(block.get_weights())
    np.testing.assert_allclose(masked(x, training=False)[0], block(x, training=False)[0], rtol=1e-6, atol=1e-6)
    block(x, training=True)  # training computes every group (the gates multiply them)
    assert calls == [3, 1]


def test_one_group_forced_on_equals_the_resnet_bottleneck():
    x = features((2, 8, 8, 32))
    block = CDBBlock("bottleneck", width=8, out_channels=32, groups=1, strides=2)
    block(x)
    set_gates(block, [True])
    ref = ResNetBlock(8, strides=2, bottleneck=True)
    ref(x)
    branch = block.branches[0]
    convs = [layer for layer in branch.steps if isinstance(layer, keras.layers.Conv2D)]
    bns = [layer for layer in branch.steps if isinstance(layer, keras.layers.BatchNormalization)]
    for src, dst in zip(convs + bns + block.shortcut, ref.convs + ref.bns + ref.downsample, strict=False):
        weights = [RNG.normal(size=w.shape).astype("float32") for w in src.get_weights()]
        if isinstance(src, keras.layers.BatchNormalization):
            weights[3] = np.abs(weights[3]) + 0.5  # a positive moving variance
        src.set_weights(weights)
        dst.set_weights(weights)
    np.testing.assert_allclose(block(x, training=False)[0], ref(x, training=False), rtol=1e-4, atol=1e-4)
    branch_params = sum(
        int(np.prod(w.shape))
        for w in branch.trainable_weights + block.shortcut[0].trainable_weights + block.shortcut[1].trainable_weights
    )
    assert branch_params == sum(int(np.prod(w.shape)) for w in ref.trainable_weights)


def test_madds_and_group_width():
    block = CDBBlock("bottleneck", width=38, out_channels=256, groups=2)
    shape = (1, 56, 56, 256)
    block.build([shape, (1, 32)])
    # Spec §2.3: f = H_in²·C_in·w + H_out²·9w² + H_out²·w·C_out = 101.8 MMAdds for a stride-1 stage-1 group.
    assert block.group_madds([shape, (1, 32)]) == 56 * 56 * (256 * 38 + 9 * 38 * 38 + 38 * 256)
    assert block.compute_madds([shape, (1, 32)]) == (
        2 * block.group_madds([shape, (1, 32)]) + 256 * 32 + 32 * 32 + 32 * 4
    )
    assert count_madds(block, [shape, (1, 32)]) == block.compute_madds([shape, (1, 32)])
    assert group_width("bottleneck", 64, 256, 256, 4) == 24  # Table 1's N = 4 width (parameter-preserving; not printed)
    assert group_width("basic", 128, 128, 128, 2) == 64


def test_serialization_round_trip():
    x = features()
    block = CDBBlock(
        "basic",
        width=6,
        out_channels=24,
        groups=3,
        strides=2,
        hidden=16,
        noise_stddev=0.5,
        on_bias=2.0,
        conditional=False,
        seed=3,
    )
    y = block(x, training=False)
    clone = CDBBlock.from_config(block.get_config())
    clone(x)
    clone.set_weights(block.get_weights())
    for a, b in zip(y, clone(x, training=False), strict=False):
        np.testing.assert_array_equal(a, b)
    assert clone.get_config() == block.get_config()
    for layer in (GroupGate(0.3, seed=2), ContextAwareGroupController(3, 8, 0.5), GroupBranch("bottleneck", 4, 8, 2)):
        assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: CDBBlock("basic", 8, 16, groups=0), "`groups`"),
        (lambda: CDBBlock("resnext", 8, 16), "`kind`"),
        (lambda: CDBBlock("basic", 8, 16, strides=3), "`strides`"),
        (lambda: ContextAwareGroupController(2, hidden=0), "`hidden`"),
        (lambda: GroupGate(noise_stddev=-1), "`noise_stddev`"),
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_input_shapes():
    block = CDBBlock("basic", 8, 16, hidden=32)
    with pytest.raises(ValueError, match="h_prev"):
        block([features(), np.zeros((3, 16), "float32")])
    with pytest.raises(ValueError, match="feature map"):
        CDBBlock("basic", 8, 16)(np.zeros((3, 16), "float32"))
    with pytest.raises(ValueError, match=r"\(batch, groups, 2\)"):
        GroupGate()(np.zeros((3, 4), "float32"))
