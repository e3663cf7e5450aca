"""DDW operators: the edge router, the soft/hard threshold and its autodiff gradient, the three forms of the
weighted sums (same values and gradients; the adjacency form through its custom gradient), the wired stage's
graph, adjacency matrices, MAdds, argument checks and serialization."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from dynzoo.layers.base import count_madds
from dynzoo.layers.wiring import (
    AGGREGATIONS,
    Router,
    WiredStage,
    edge_gate,
    weighted_sum,
)
from dynzoo.models.resnet import ResNetBlock


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def stage(n=3, channels=8, **kwargs):
    blocks = [ResNetBlock(channels, 2 if i == 0 else 1, name=f"b{i}") for i in range(n)]
    return WiredStage(blocks, **kwargs)


def small_model(n=3, channels=8, size=8, **kwargs):
    inputs = keras.Input((size, size, 4))
    y, adjacency = stage(n, channels, name="graph", **kwargs)(inputs)
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(y))
    return keras.Model(inputs, [out, adjacency])


def test_router_starts_open_with_bias_3_and_counts_madds():
    router = Router(4)
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 6)).astype("float32")
    np.testing.assert_allclose(router(x), np.full((2, 4), sigmoid(3.0)), rtol=1e-6)  # 0.953, Fig. 3's best
    assert count_madds(router, (None, 5, 5, 6)) == 6 * 4
    static = Router(3, dynamic=False, bias_init=-1.0)
    np.testing.assert_allclose(static(x), np.full((2, 3), sigmoid(-1.0)), rtol=1e-6)
    assert [w.name for w in static.weights] == ["bias"] and count_madds(static, (None, 5, 5, 6)) == 0
    with pytest.raises(ValueError, match="edges"):
        Router(0)
    with pytest.raises(ValueError, match="bias_init"):
        Router(2, bias_init=float("nan"))
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        Router(2).build((None, 6))


def test_dynamic_router_weights_depend_on_the_sample():
    router = Router(2)
    router.build((None, 3, 3, 2))
    router.kernel.assign(np.array([[1.0, -1.0], [0.5, 0.0]], "float32"))
    x = np.stack([np.full((3, 3, 2), v, "float32") for v in (0.0, 1.0)])
    expected = sigmoid(np.array([[3.0, 3.0], [4.5, 2.0]]))
    np.testing.assert_allclose(router(x), expected, rtol=1e-6)


def test_threshold_soft_in_training_hard_at_inference():
    alpha = np.array([0.05, 0.3, 0.9], "float32")
    tau = 0.2
    soft = alpha * sigmoid(alpha - tau)
    np.testing.assert_allclose(edge_gate(alpha, tau, training=True), soft, rtol=1e-6)
    np.testing.assert_allclose(edge_gate(alpha, tau, inference_gate="consistent"), [0.0, soft[1], soft[2]], rtol=1e-6)
    np.testing.assert_allclose(edge_gate(alpha, tau, inference_gate="paper"), [0.0, 0.3, 0.9], rtol=1e-6)
    # τ = 0 keeps every edge (α = σ(·) > 0)
    assert np.all(edge_gate(alpha, 0.0, inference_gate="paper").numpy() == alpha)


def test_threshold_gradient_is_autodiff_not_the_papers_eq9():
    alpha = tf.constant([0.5, 0.95])
    tau = tf.Variable(-1.0)
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(edge_gate(alpha, tau, training=True))
    grad = float(tape.gradient(y, tau))
    s = sigmoid(alpha.numpy() + 1.0)
    true = float(np.sum(-alpha.numpy() * s * (1 - s)))
    paper_eq9 = float(np.sum(alpha.numpy() * (alpha.numpy() + 1.0) * ((alpha.numpy() + 1.0) - 1)))
    assert grad == pytest.approx(true, rel=1e-5)
    assert grad < 0 < paper_eq9  # the printed derivative is another function (even its sign differs here)


def test_the_three_aggregation_forms_agree_in_value_and_gradient():
    rng = np.random.default_rng(0)
    weights = tf.constant(rng.uniform(size=(2, 3)).astype("float32"))
    features = [tf.constant(rng.normal(size=(2, 4, 4, 5)).astype("float32")) for _ in range(3)]
    upstream = tf.constant(rng.normal(size=(2, 4, 4, 5)).astype("float32"))
    results = {}
    for form in AGGREGATIONS:
        with tf.GradientTape() as tape:
            tape.watch([weights, *features])
            y = weighted_sum(weights, features, form, training=True)
            loss = tf.reduce_sum(y * upstream)
        results[form] = (y.numpy(), tape.gradient(loss, [weights, *features]))
    expected = sum(f.numpy() * weights.numpy()[:, i, None, None, None] for i, f in enumerate(features))
    d_weights = np.stack([np.sum(upstream.numpy() * f.numpy(), axis=(1, 2, 3)) for f in features], axis=1)
    for form, (y, grads) in results.items():
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6, err_msg=form)
        np.testing.assert_allclose(grads[0], d_weights, rtol=1e-4, atol=1e-5, err_msg=form)
        for i, g in enumerate(grads[1:]):
            np.testing.assert_allclose(
                g, upstream.numpy() * weights.numpy()[:, i, None, None, None], rtol=1e-5, atol=1e-6, err_msg=form
            )


def test_adjacency_form_uses_its_custom_gradient_and_keeps_no_stack():
    """The backward graph of the adjacency form has the custom gradient's IdentityN and no (B, n, H, W, C)
    stack; the naive form stacks the predecessors (Pack of 4-D maps)."""
    spec = [tf.TensorSpec((2, 3))] + [tf.TensorSpec((2, 4, 4, 5))] * 3

    def graph_ops(form):
        @tf.function
        def step(w, *xs):
            with tf.GradientTape() as tape:
                tape.watch([w, *xs])
                y = weighted_sum(w, xs, form, training=True)
            return tape.gradient(y, [w, *xs])

        graph = step.get_concrete_function(*spec).graph
        return graph.get_operations()

    def packs_of_maps(ops):
        return [op for op in ops if op.type == "Pack" and len(op.outputs[0].shape) == 5]

    adjacency = graph_ops("adjacency")
    assert any(op.type == "IdentityN" for op in adjacency) and not packs_of_maps(adjacency)
    assert packs_of_maps(graph_ops("stacked"))


def test_stage_graph_adjacency_and_initial_weights():
    model = small_model()
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 4)).astype("float32")
    _, adjacency = model(x, training=False)
    adjacency = adjacency.numpy()
    assert adjacency.shape == (2, 4, 4)  # 3 blocks + the output node
    assert np.all(np.triu(adjacency) == 0)  # strictly lower-triangular: edges go forward only
    a = sigmoid(3.0)  # zero router kernels, bias 3, τ = 0: every edge open with α·σ(α − τ)
    np.testing.assert_allclose(
        adjacency[:, np.tril_indices(4, -1)[0], np.tril_indices(4, -1)[1]], a * sigmoid(a), rtol=1e-6
    )
    _, trained_adjacency = model(x, training=True)
    np.testing.assert_allclose(trained_adjacency, adjacency, rtol=1e-6)  # soft = hard magnitude when all open


def test_stage_output_is_the_weighted_dag():
    """Node j = B_j(Σ_i A[j, i] x_i), output = Σ_i A[n, i] x_i, recomputed by hand from the blocks."""
    model = small_model(n=3)
    graph = model.get_layer("graph")
    rng = np.random.default_rng(2)
    for router in graph.routers:
        router.kernel.assign(rng.normal(0, 3.0, router.kernel.shape).astype("float32"))
        router.bias.assign(np.zeros(router.bias.shape, "float32"))
    graph.threshold.assign(np.array([0.5, 0.4, 0.5], "float32"))
    x = rng.normal(size=(3, 8, 8, 4)).astype("float32")
    y, adjacency = graph(x, training=False)
    adjacency = adjacency.numpy()
    rows, cols = np.tril_indices(4, -1)
    edges = adjacency[:, rows, cols]
    assert (edges == 0).any() and (edges > 0).any()  # the thresholds close some edges, not all
    nodes = [graph.blocks[0](x, training=False).numpy()]
    for j in range(1, 4):
        agg = sum(adjacency[:, j, i, None, None, None] * nodes[i] for i in range(j))
        nodes.append(graph.blocks[j](agg, training=False).numpy() if j < 3 else agg)
    np.testing.assert_allclose(y, nodes[-1], rtol=1e-5, atol=1e-5)
    assert np.std(adjacency[:, 3, :3], axis=0).max() > 0  # per-sample wiring


def test_chain_wiring_is_the_sequence_of_blocks():
    graph = stage(3, wiring="chain")
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 4)).astype("float32")
    y, adjacency = graph(x)
    expected = x
    for block in graph.blocks:
        expected = block(expected)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(adjacency[0], np.eye(4, k=-1))
    assert not graph.routers and count_madds(graph, (None, 8, 8, 4)) == sum(
        count_madds(b, s) for b, s in zip(graph.blocks, [(None, 8, 8, 4)] + [(None, 4, 4, 8)] * 2, strict=False)
    )


def test_stage_madds_and_parameters():
    graph = stage(3, channels=8)
    graph.build((None, 8, 8, 4))
    blocks = count_madds(graph.blocks[0], (None, 8, 8, 4)) + 2 * count_madds(graph.blocks[1], (None, 4, 4, 8))
    routers = 8 * (3 + 2 + 1)
    assert count_madds(graph, (None, 8, 8, 4)) == blocks + routers + 6 * 4 * 4 * 8  # 6 edges × H·W·C
    extra = sum(math.prod(w.shape) for r in graph.routers for w in r.weights) + 3  # + one τ per receiving node
    assert extra == (8 + 1) * 6 + 3
    static = stage(3, channels=8, wiring="static")
    static.build((None, 8, 8, 4))
    assert count_madds(static, (None, 8, 8, 4)) == blocks + 6 * 4 * 4 * 8


def test_stage_argument_and_shape_errors():
    with pytest.raises(ValueError, match="wiring"):
        stage(wiring="random")
    with pytest.raises(ValueError, match="inference_gate"):
        stage(inference_gate="hard")
    with pytest.raises(ValueError, match="aggregation"):
        stage(aggregation="sum")
    with pytest.raises(ValueError, match="blocks"):
        WiredStage([])
    with pytest.raises(ValueError, match="blocks"):  # a later block that changes the shape cannot be summed
        WiredStage([ResNetBlock(8), ResNetBlock(16)]).build((None, 8, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        stage().build((None, 8, 4))


def test_stage_round_trips_through_keras_file(tmp_path):
    model = small_model(n=2, wiring="dynamic", inference_gate="paper", aggregation="stacked")
    graph = model.get_layer("graph")
    rng = np.random.default_rng(4)
    for router in graph.routers:
        router.kernel.assign(rng.normal(0, 1.0, router.kernel.shape).astype("float32"))
    graph.threshold.assign(np.array([0.6, 0.4], "float32"))
    model.save(tmp_path / "stage.keras")
    loaded = keras.saving.load_model(tmp_path / "stage.keras")
    x = rng.normal(size=(2, 8, 8, 4)).astype("float32")
    for a, b in zip(model(x), loaded(x), strict=False):
        np.testing.assert_array_equal(a, b)
    config = loaded.get_layer("graph").get_config()
    assert (config["inference_gate"], config["aggregation"], len(config["blocks"])) == ("paper", "stacked", 2)
