"""DRNet models: sizes against the paper, builder arguments, routing analysis, resource loss, a short
digits training with routing, round trips and the builtin-only TFLite export's routing decisions."""

import math

import keras
import numpy as np
import pytest

import dynzoo
from dynzoo.layers.base import count_madds
from dynzoo.layers.routing import set_routing
from dynzoo.models.drnet import (
    DRNet,
    DRNetCell,
    _input_shapes,
    all_branch_madds,
    analyze_routing,
    branch_cost_table,
    drnet_cells,
    routing_model,
)
from dynzoo.profile import trainable_params
from dynzoo.train.families.drnet import resource_loss

# Paper Table 1 (all branches, RouterNets included) and the spec's recount of the backbones (§3.6).
PAPER = {
    "drnet_s": (0.57, 84.65, 0.483, 77.9),
    "drnet_m": (1.86, 267.3, 1.559, 250.8),
    "drnet_l": (4.41, 603.1, 3.691, 566.0),
}


def sizes(model):
    cells = drnet_cells(model)
    params = sum(trainable_params(layer) for layer in model.layers)
    routers = sum(trainable_params(cell.router) for cell in cells)
    pools = 0  # the spec's recount charges 3×3 pooling 9 MAdds per output element
    for cell in cells:
        states = cell._state_shapes(_input_shapes(cell))
        pools += sum(
            9 * math.prod(op.compute_output_shape(states[src])[1:])
            for src, branches in zip(cell.sources, cell.branches, strict=False)
            for op in branches
            if op.kind in ("max_pool", "avg_pool")
        )
    return params, routers, all_branch_madds(model), pools


def check_sizes(name):
    paper_params, paper_madds, backbone_params, _ = PAPER[name]
    params, routers, madds, pools = sizes(dynzoo.create_model(name))
    assert params / 1e6 == pytest.approx(paper_params, rel=0.03)
    # the classifier (10-way FC) is part of our count and of neither reference
    assert (params - routers) / 1e6 == pytest.approx(backbone_params, rel=0.015)
    assert (madds + pools) / 1e6 == pytest.approx(paper_madds, rel=0.03)


@pytest.mark.slow
def test_drnet_s_sizes_match_the_paper():
    check_sizes("drnet_s")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["drnet_m", "drnet_l"])
def test_drnet_m_l_sizes_match_the_paper(name):
    check_sizes(name)


def test_registry_and_builder_arguments():
    assert dynzoo.list_models("drnet_*") == ["drnet_l", "drnet_l_imagenet", "drnet_m", "drnet_s"]
    model = dynzoo.create_model("drnet_s", cells=2, channels=4, include_top=False, pooling="avg")
    assert model.output.shape == (None, 64)  # 2 reduction cells: C = 4 → 8 → 16, 4 nodes concatenated
    model = dynzoo.create_model(
        "drnet_l_imagenet", cells=2, channels=8, input_shape=(64, 64, 3), classes=7, classifier_activation=None
    )
    assert model.output.shape == (None, 7)
    assert model.get_layer("cell0").reduction_prev  # the ImageNet stem hands over a reduced x1
    assert dynzoo.create_model("drnet_s", input_shape=(30, 30, 3)).output.shape == (None, 10)  # odd maps: 15, 8
    with pytest.raises(ValueError, match="at least 8"):
        dynzoo.create_model("drnet_s", input_shape=(6, 30, 3))
    with pytest.raises(ValueError, match="threshold"):
        dynzoo.create_model("drnet_s", cells=1, channels=4, threshold=0.0)
    with pytest.raises(ValueError, match="cells"):
        dynzoo.create_model("drnet_s", cells=0)
    with pytest.raises(ValueError, match="model_name"):
        DRNet("drnet_xl")


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(1)
    return DRNet("drnet_s", cells=3, channels=6, input_shape=(16, 16, 3), classes=10)


@pytest.mark.slow
def test_routing_analysis_counts_the_computed_branches(tiny):
    x = np.random.default_rng(0).uniform(0, 255, (6, 16, 16, 3)).astype("float32")
    total = all_branch_madds(tiny)
    costs = branch_cost_table(tiny)
    assert costs.shape == (3, 8, 5)
    static = sum(
        count_madds(layer, _input_shapes(layer))
        for layer in tiny.layers
        if not isinstance(layer, (keras.layers.InputLayer, DRNetCell))
    )
    assert total == static + sum(cell.compute_madds(_input_shapes(cell)) for cell in drnet_cells(tiny))
    model = routing_model(tiny)  # traced once; the threshold is a variable
    set_routing(tiny, threshold=1.0)
    full = analyze_routing(tiny, x, routed=model)
    assert full.masks.all() and np.all(full.madds == total) and full.madds_ratio == 1.0
    set_routing(tiny, threshold=0.3)
    routed = analyze_routing(tiny, x, routed=model)
    set_routing(tiny, threshold=0.8)
    expected = total - ((~routed.masks) * costs).sum(axis=(1, 2, 3))
    np.testing.assert_array_equal(routed.madds, expected)
    assert routed.madds.max() < total
    assert len(np.unique(routed.madds)) > 1  # per-sample routing: the gates depend on the input
    assert routed.usage().shape == (3, 5) and "skip_connect" in routed.usage_table()
    np.testing.assert_allclose(full.outputs.sum(-1), 1.0, rtol=1e-5)


def test_resource_loss_only_for_correct_samples_and_pushes_to_cheap_branches():
    logits = np.array([[3.0, 0.0], [0.0, 3.0]], "float32")
    labels = np.array([0, 0])
    costs = np.array([[[10.0, 0.0]]], "float32")  # one cell, one connection: a costly and a free branch
    import tensorflow as tf

    w = tf.constant(np.array([[[[0.5, 0.5]]], [[[0.5, 0.5]]]], "float32"))
    with tf.GradientTape() as tape:
        tape.watch(w)
        loss = resource_loss(logits, labels, w, costs)
        total = tf.reduce_sum(loss)
    np.testing.assert_allclose(loss, [math.log(5.0 + 1e-6), 0.0], rtol=1e-6)
    grad = tape.gradient(total, w).numpy()
    assert grad[0, 0, 0, 0] > 0 and grad[0, 0, 0, 1] == 0  # descent lowers the costly branch's weight
    np.testing.assert_array_equal(grad[1], 0)  # misclassified: no resource pressure


@pytest.fixture(scope="module")
def trained():
    """A 2-cell DRNet trained on 16×16 digits the way ``dynzoo train --routing_threshold 0.8
    --resource_weight 0.5`` does (the family's training hook on the trainer's compiled loss, one-hot
    labels): 3 epochs τ = 3 without, 3 epochs τ 1 → 0.5 with the resource term."""
    from dynzoo.data import digits_arrays
    from dynzoo.train.hooks import TrainingContext, prepare_training
    from dynzoo.train.recipes import get_recipe
    from dynzoo.train.trainer import compile_for_recipe

    keras.utils.set_random_seed(0)
    x_train, y_train = digits_arrays("train", 16)
    x_test, y_test = digits_arrays("test", 16)
    network = DRNet("drnet_s", cells=2, channels=8, input_shape=(16, 16, 3))  # 2 cells trace in 2/3 of 3's time
    steps = math.ceil(len(x_train) / 64)
    setup = prepare_training(
        "drnet",
        network,
        {"routing_threshold": 0.8, "resource_weight": 0.5},
        TrainingContext(6, steps, x_test[:64].astype("float32"), verbose=0),
    )
    # constant Adam 5e-3 (``step`` without milestones): a decayed rate leaves the resource stage too little to act
    recipe = get_recipe("digits").replace(
        optimizer="adam", lr=5e-3, epochs=6, schedule="step", milestones=[], warmup_epochs=0, weight_decay=0.0
    )
    compile_for_recipe(setup.model, recipe, recipe.lr, steps, classes=10)
    history = setup.model.fit(
        x_train.astype("float32"),
        keras.utils.to_categorical(y_train, 10),
        batch_size=64,
        epochs=6,
        verbose=0,
        callbacks=setup.callbacks,
    )
    return network, setup, history.history, x_test.astype("float32"), y_test


def usage_logger_model(setup) -> keras.Model:
    """The routing model that the training's branch-usage logger built and traced (one trace less)."""
    from dynzoo.train.families.drnet import BranchUsageLogger

    return next(c for c in setup.callbacks if isinstance(c, BranchUsageLogger)).routed_model()


def test_drnet_hook_checks_its_options(tiny):
    from dynzoo.train.hooks import TrainingContext, prepare_training

    context = TrainingContext(4, 2, np.zeros((2, 16, 16, 3), "float32"))
    for options, message in (
        ({"routing_threshold": 0.0}, "routing_threshold"),
        ({"resource_weight": -1.0}, "resource_weight"),
    ):
        with pytest.raises(ValueError, match=message):
            prepare_training("drnet", tiny, options, context)
    with pytest.raises(ValueError, match="applies only to models of the drnet family"):
        prepare_training("micronet", tiny, {"resource_weight": 0.1}, context)


@pytest.mark.slow
def test_training_learns_and_routing_saves_madds(trained):
    network, setup, history, x_test, y_test = trained
    assert history["expected_mmadds"][-1] < history["expected_mmadds"][2]  # the resource term acts
    assert history["temperature"] == pytest.approx([3, 3, 3, 1, 0.5**0.5, 0.5], rel=1e-5)
    assert "usage_skip_connect" in history and 0 < history["madds_ratio"][-1] < 1  # branch usage logged
    report = setup.report(network)
    assert report["routing_threshold"] == 0.8 and report["madds_ratio_on_sample"] < 1
    model = usage_logger_model(setup)
    set_routing(network, threshold=1.0)
    full = analyze_routing(network, x_test, routed=model)
    set_routing(network, threshold=0.8)
    routed = analyze_routing(network, x_test, routed=model)
    acc_full = np.mean(full.outputs.argmax(-1) == y_test)
    acc_routed = np.mean(routed.outputs.argmax(-1) == y_test)
    # Measured (deterministic ops, seed 0, fused Adam, oneDNN on): 0.793 with every branch, 0.791 routed at 0.355 of
    # the MAdds (0.891 / 0.891 with oneDNN off). Chance is 0.10. With resource weight 0.5 the training drives every
    # sample onto the same cheap path here (one per-sample cost); an earlier package set kept two. That routing
    # depends on the input is checked without training, in test_routing_analysis_counts_the_computed_branches.
    assert acc_full > 0.75, acc_full
    assert acc_routed >= acc_full - 0.03, (acc_routed, acc_full)
    assert routed.madds_ratio < 0.85, routed.madds_ratio


@pytest.mark.slow
def test_trained_model_round_trips(trained, tmp_path):
    network, _, _, x_test, _ = trained
    network.save(tmp_path / "drnet.keras")
    loaded = keras.saving.load_model(tmp_path / "drnet.keras")
    np.testing.assert_array_equal(network(x_test[:8], training=False), loaded(x_test[:8], training=False))
    np.testing.assert_allclose([c.threshold.numpy() for c in drnet_cells(loaded)], 0.8, rtol=1e-6)
    np.testing.assert_allclose([c.temperature.numpy() for c in drnet_cells(loaded)], 0.5, rtol=1e-6)


@pytest.mark.slow
def test_tflite_reproduces_the_routing(trained):
    from ai_edge_litert.interpreter import Interpreter

    from dynzoo.export import op_counts, to_tflite

    network, setup, _, x_test, _ = trained
    routed = usage_logger_model(setup)
    flatbuffer = to_tflite(routed)
    counts = op_counts(flatbuffer)
    assert counts.get("IF", 0) == 2 * 8 * 5  # one builtin IF per branch skips the unselected ones
    assert not any(op.startswith(("FLEX", "CUSTOM")) for op in counts)
    x = x_test[:40]
    keras_out, keras_w = (np.asarray(t) for t in routed(x, training=False))  # eager: no predict function to trace
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    details = {tuple(d["shape"][1:]): d["index"] for d in interpreter.get_output_details()}
    same = []
    for i, sample in enumerate(x):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample[None])
        interpreter.invoke()
        weights = interpreter.get_tensor(details[(2, 8, 5)])[0]
        same.append(np.array_equal(weights > 0, keras_w[i] > 0))
        np.testing.assert_allclose(interpreter.get_tensor(details[(10,)])[0], keras_out[i], atol=1e-4)
    assert np.mean(same) >= 0.99
