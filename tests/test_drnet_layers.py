"""DRNet routing layers: threshold routing, Gumbel-softmax, candidate branches, RouterNet, the cell."""

import math

import keras
import numpy as np
import pytest

from dynzoo.layers.routing import (
    CANDIDATE_OPS,
    PAPER_OPS,
    CandidateOp,
    FactorizedReduce,
    GumbelTemperatureSchedule,
    RouterNet,
    gumbel_softmax,
    threshold_select,
)
from dynzoo.models.drnet import DRNetCell


def reference_selection(p: np.ndarray, threshold: float) -> np.ndarray:
    """Sort, keep the shortest prefix whose mass reaches T (ties: lower index first)."""
    order = sorted(range(len(p)), key=lambda b: (-p[b], b))
    mask, mass = np.zeros(len(p), bool), 0.0
    for b in order:
        if mass >= threshold:
            break
        mask[b], mass = True, mass + p[b]
    return mask


def test_threshold_select_matches_sorting():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(5, 0.5), size=(300,)).astype("float32")
    probs[:10] = [0.2] * 5  # ties
    for threshold in (0.3, 0.5, 0.8, 0.95):
        weights, mask = (np.asarray(t) for t in threshold_select(probs, threshold))
        expected = np.array([reference_selection(p, threshold) for p in probs])
        np.testing.assert_array_equal(mask.astype(bool), expected)
        np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
        np.testing.assert_array_equal(weights > 0, expected)
        # the kept mass reaches T, and dropping the smallest kept branch falls below it
        kept = (probs * mask).sum(-1)
        assert np.all(kept >= threshold - 1e-6)
        smallest = np.where(mask > 0, probs, np.inf).min(-1)
        assert np.all(kept - smallest < threshold)
        np.testing.assert_allclose(weights, probs * mask / kept[:, None], rtol=1e-6)


def test_threshold_select_extremes():
    probs = np.array([[0.1, 0.5, 0.2, 0.15, 0.05], [0.96, 0.01, 0.01, 0.01, 0.01]], "float32")
    _, mask = threshold_select(probs, 1.0)
    np.testing.assert_array_equal(mask, np.ones_like(probs))
    weights, mask = threshold_select(probs, 1e-6)
    np.testing.assert_array_equal(mask, [[0, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(weights, mask)
    _, mask = threshold_select(probs, 0.8)  # 0.5 + 0.2 = 0.7 < 0.8 → the 0.15 branch crosses T
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1, 0], [1, 0, 0, 0, 0]])


def test_gumbel_softmax_samples_the_softmax():
    logits = np.log(np.array([[0.5, 0.25, 0.15, 0.1]], "float32"))
    draws = np.asarray(gumbel_softmax(np.repeat(logits, 20000, 0), 0.05, seed=1))
    np.testing.assert_allclose(draws.sum(-1), 1.0, rtol=1e-5)
    frequency = np.bincount(draws.argmax(-1), minlength=4) / len(draws)
    np.testing.assert_allclose(frequency, np.exp(logits[0]), atol=0.015)  # Gumbel-max: argmax ~ softmax
    assert np.mean(draws.max(-1) > 0.95) > 0.9  # low τ: nearly one-hot


def test_temperature_schedule_follows_the_paper():
    schedule = GumbelTemperatureSchedule(initial=3.0, hold_epochs=5)
    assert [schedule.value(e) for e in range(5)] == [3.0] * 5
    assert schedule.value(5) == 1.0
    assert schedule.value(105) == pytest.approx(math.exp(-0.06))
    assert schedule.value(5 + 1200) == 0.5  # e^{-0.72} = 0.487 is floored
    with pytest.raises(ValueError, match="decay"):
        GumbelTemperatureSchedule(decay=1.5)


@pytest.mark.parametrize("op", sorted(CANDIDATE_OPS))
@pytest.mark.parametrize("strides", [1, 2])
def test_candidate_op_shapes_and_madds(op, strides):
    layer = CandidateOp(op, 6, strides)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 6)).astype("float32")
    y = layer(x)
    assert y.shape == layer.compute_output_shape(x.shape) == (2, 8 // strides, 8 // strides, 6)
    kind, k, _ = CANDIDATE_OPS[op]
    out = (8 // strides) ** 2
    expected = {
        "sep_conv": out * (k * k * 6 + 36) * 2,
        "dil_conv": 64 * k * k * 6 + out * 36,  # the dilated depthwise runs at stride 1
        "max_pool": 0,
        "avg_pool": 0,
        "skip": out * 36 if strides == 2 else 0,
    }[kind]
    assert layer.compute_madds(x.shape) == expected
    params = sum(math.prod(w.shape) for w in layer.trainable_weights)
    if kind == "sep_conv":
        assert params == 2 * (k * k * 6 + 36 + 12)  # DARTS double separable conv (dw, pw, BN) × 2
    if op == "skip_connect" and strides == 1:
        np.testing.assert_array_equal(y, x)


def test_pools_use_pytorch_windows():
    x = np.random.default_rng(1).normal(size=(1, 6, 6, 2)).astype("float32")
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=np.nan)
    for op, reduce in (("max_pool_3x3", np.nanmax), ("avg_pool_3x3", np.nanmean)):
        for strides in (1, 2):
            expected = np.array(
                [
                    [[reduce(padded[0, i : i + 3, j : j + 3, c]) for c in range(2)] for j in range(0, 6, strides)]
                    for i in range(0, 6, strides)
                ]
            )
            np.testing.assert_allclose(CandidateOp(op, 2, strides)(x)[0], expected, rtol=1e-5, atol=1e-6)


def test_factorized_reduce_and_router_shapes():
    x = np.ones((2, 8, 8, 5), "float32")
    assert FactorizedReduce(7)(x).shape == (2, 4, 4, 7)
    router = RouterNet(8, 5)
    assert router([x, x]).shape == (2, 8, 5)
    with pytest.raises(ValueError, match="same shape"):
        RouterNet(8, 5)([x, x[:, :4]])


def test_factorized_reduce_at_odd_sizes_extends_the_even_one():
    """At 7×7 the output is 4×4: the 3×3 corner is the 6×6 crop's output exactly (so even sizes are
    DARTS' computation), and the shifted branch sees zeros in the last row and column."""
    layer = FactorizedReduce(4)
    x = np.random.default_rng(0).normal(size=(2, 7, 7, 3)).astype("float32")
    odd, even = np.asarray(layer(x)), np.asarray(layer(x[:, :6, :6]))
    assert odd.shape == (2, 4, 4, 4) and even.shape == (2, 3, 3, 4)
    np.testing.assert_array_equal(odd[:, :3, :3], even)
    zero_input = np.asarray(layer.bn(np.zeros((1, 1, 1, 4), "float32")))[0, 0, 0, 2:]
    np.testing.assert_allclose(odd[:, 3, :, 2:], np.broadcast_to(zero_input, (2, 4, 2)), atol=1e-6)
    dynamic = keras.Model(inp := keras.Input((None, None, 3)), layer(inp))
    np.testing.assert_array_equal(np.asarray(dynamic(x)), odd)


def small_cell(**kwargs):
    return DRNetCell(4, **kwargs)


def cell_inputs(batch=2, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(batch, size, size, 6)).astype("float32") for _ in range(2)]


def test_cell_shapes_training_and_inference():
    cell = small_cell(reduction=True, temperature=1.0, threshold=0.8)
    x = cell_inputs()
    y, w = cell(x, training=True)
    assert y.shape == (2, 4, 4, 16) and w.shape == (2, 8, 5)
    np.testing.assert_allclose(np.sum(w, -1), 1.0, rtol=1e-5)
    assert np.all(np.asarray(w) > 0)  # soft: every branch is computed and mixed
    _, w2 = cell(x, training=True)
    assert not np.allclose(w, w2)  # fresh Gumbel noise
    y1, w1 = cell(x, training=False)
    y2, w2 = cell(x, training=False)
    np.testing.assert_array_equal(y1, y2)  # no noise at inference
    np.testing.assert_allclose(np.sum(w1, -1), 1.0, rtol=1e-5)
    assert np.any(np.asarray(w1) == 0)


def mixed_output(cell, x, weights):
    """x_i = Σ_j Σ_b w_b F_b(x_j) written out with the cell's own sub-layers (eq. 2)."""
    states = [cell.pre0(x[0]), cell.pre1(x[1])]
    k = 0
    for pair in cell.node_inputs:
        node = 0
        for src in pair:
            for b, op in enumerate(cell.branches[k]):
                node = node + weights[:, k, b][:, None, None, None] * np.asarray(op(states[src]))
            k += 1
        states.append(node)
    return np.concatenate(states[2:], axis=-1)


@pytest.mark.parametrize("threshold", [1.0, 0.8, 0.3])
def test_cell_inference_equals_the_equation(threshold):
    cell = small_cell(temperature=0.7, threshold=threshold)
    x = cell_inputs(batch=3)
    y, w = cell(x, training=False)
    logits = np.asarray(cell.router([cell.pre0(x[0]), cell.pre1(x[1])]))
    p = np.exp(logits / 0.7) / np.exp(logits / 0.7).sum(-1, keepdims=True)
    mask = np.array([[reference_selection(row, threshold) for row in sample] for sample in p])
    np.testing.assert_array_equal(np.asarray(w) > 0, mask)
    expected_w = p * mask / (p * mask).sum(-1, keepdims=True)
    np.testing.assert_allclose(w, expected_w, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y, mixed_output(cell, x, expected_w), rtol=1e-4, atol=1e-5)
    if threshold == 1.0:
        assert mask.all()


def test_unselected_branches_are_not_computed(monkeypatch):
    calls = []
    original = CandidateOp.call

    def counting_call(self, inputs, training=None):
        calls.append(self.name)
        return original(self, inputs, training=training)

    cell = small_cell(threshold=0.5, temperature=0.5)
    x = cell_inputs(batch=1)
    reference = DRNetCell.from_config({**cell.get_config(), "conditional": False})
    reference.build([t.shape for t in x])
    y_all, _ = cell(x, training=False)  # builds
    reference.set_weights(cell.get_weights())
    monkeypatch.setattr(CandidateOp, "call", counting_call)
    y, w = cell(x, training=False)  # eager, batch 1: one cond per branch
    selected = int(np.sum(np.asarray(w) > 0))
    assert len(calls) == selected < 8 * 5
    calls.clear()
    y_ref, w_ref = reference(x, training=False)
    assert len(calls) == 8 * 5  # compute-all variant
    np.testing.assert_array_equal(w, w_ref)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)


def test_cell_serialization_round_trip(tmp_path):
    inputs = [keras.Input((8, 8, 6)), keras.Input((8, 8, 6))]
    y, w = DRNetCell(
        4,
        reduction=True,
        node_inputs=[(0, 1), (2, 1), (3, 0), (4, 1)],
        ops=PAPER_OPS[::-1],
        temperature=0.6,
        threshold=0.7,
        name="cell",
    )(inputs)
    model = keras.Model(inputs, [y, w])
    model.get_layer("cell").threshold.assign(0.9)
    path = tmp_path / "cell.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = cell_inputs()
    for a, b in zip(model(x, training=False), loaded(x, training=False), strict=False):
        np.testing.assert_array_equal(a, b)
    assert float(loaded.get_layer("cell").threshold.numpy()) == pytest.approx(0.9)
    assert loaded.get_layer("cell").node_inputs == ((0, 1), (2, 1), (3, 0), (4, 1))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"channels": 0}, "channels"),
        ({"channels": 4, "threshold": 1.5}, "threshold"),
        ({"channels": 4, "temperature": 0}, "temperature"),
        ({"channels": 4, "ops": ["sep_conv_7x7"]}, "ops"),
        ({"channels": 4, "ops": ["skip_connect", "skip_connect"]}, "ops"),
        ({"channels": 4, "node_inputs": [(0, 1), (2, 2)]}, "node_inputs"),
        ({"channels": 4, "node_inputs": [(0, 3)]}, "node_inputs"),
    ],
)
def test_cell_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DRNetCell(**kwargs)


def test_cell_input_errors():
    cell = DRNetCell(4, reduction_prev=True)
    with pytest.raises(ValueError, match="x1's size must be x0's divided by 2, rounded up"):
        cell(cell_inputs())
    with pytest.raises(ValueError, match=r"\[x0, x1\]"):
        DRNetCell(4)(np.ones((1, 8, 8, 4), "float32"))
    with pytest.raises(ValueError, match="op"):
        CandidateOp("conv_9x9", 4)
    with pytest.raises(ValueError, match="strides"):
        CandidateOp("sep_conv_3x3", 4, 3)
