"""DDW models: the chain wiring reproduces the registered static networks exactly with their weights, sizes
against the spec's recount of the paper's overheads, builder arguments, a short digits training (DDW and its
static-α ablation learn), round trips, and builtin-only TFLite exports (float32 with the adjacency matrices,
int8) with parity."""

import keras
import numpy as np
import pytest

import dynzoo
from dynzoo.layers.wiring import Router, WiredStage
from dynzoo.models.ddw import (
    DDW,
    adjacency_matrices,
    load_static_weights,
    wired_stages,
    wiring_model,
)
from dynzoo.profile import profile
from dynzoo.train.optimizers import FusedAdam

SIZE = 32


def open_chain_only(model: keras.Model) -> None:
    """Edge weights: chain edges α^(j−1,j) = σ(30) = 1.0 in float32, every other α = σ(−30) < τ = 0.5 (closed)."""
    for stage in wired_stages(model):
        stage.threshold.assign(np.full(stage.threshold.shape, 0.5, "float32"))
        n = len(stage.blocks)
        for i, router in enumerate(stage.routers):
            if router.dynamic:
                router.kernel.assign(np.zeros(router.kernel.shape, "float32"))
            router.bias.assign(np.array([30.0] + [-30.0] * (n - i - 1), "float32"))


def check_chain_equals_static(ddw_name: str, static_name: str):
    keras.utils.set_random_seed(0)
    static = dynzoo.create_model(static_name, input_shape=(SIZE, SIZE, 3), classes=10)
    ddw = dynzoo.create_model(ddw_name, input_shape=(SIZE, SIZE, 3), classes=10, inference_gate="paper")
    load_static_weights(ddw, static)
    open_chain_only(ddw)
    x = np.random.default_rng(0).uniform(0, 255, (3, SIZE, SIZE, 3)).astype("float32")
    np.testing.assert_array_equal(ddw(x, training=False), static(x, training=False))
    _, *adjacency = wiring_model(ddw)(x, training=False)
    for a in adjacency:  # only the chain is open
        np.testing.assert_array_equal(a, np.broadcast_to(np.eye(a.shape[1], k=-1), a.shape))


@pytest.mark.parametrize(
    "ddw_name, static_name",
    [
        ("ddw_resnet18", "resnet18"),
        ("ddw_mobilenetv2_100", "mobilenetv2_100"),
        ("ddw_resnet18_static_alpha", "resnet18"),
    ],
)
def test_chain_edges_reproduce_the_static_network_exactly(ddw_name, static_name):
    check_chain_equals_static(ddw_name, static_name)


@pytest.mark.slow
def test_chain_edges_reproduce_resnet50_exactly():
    check_chain_equals_static("ddw_resnet50", "resnet50")


def overheads(name: str, static_name: str, model: keras.Model | None = None):
    """(params, MAdds) of ``name`` over ``static_name``; ``model``: ``name`` already built by the caller."""
    ddw, static = profile(model or dynzoo.create_model(name)), profile(dynzoo.create_model(static_name))
    return ddw.params - static.params, ddw.madds - static.madds


def test_a_fresh_mobilenetv2_depends_on_its_input_and_gets_gradients():
    """Zero-initialised residual branches must not silence a block without a shortcut."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = dynzoo.create_model("ddw_mobilenetv2_100", input_shape=(32, 32, 3), classes=10, classifier_activation=None)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_sum(logits[0] * logits[1])
    assert not np.allclose(logits[0], logits[1])
    grads = tape.gradient(loss, model.trainable_variables)
    first_conv = next(g for v, g in zip(model.trainable_variables, grads, strict=False) if "kernel" in v.path)
    assert first_conv is not None and np.abs(first_conv).max() > 0


def test_resnet18_overheads_match_the_count_of_the_construction():
    """Routers: a C→ζ_out FC with bias per node; a τ per receiving node; MAdds: routers + H·W·C per edge. The
    spec's recount for this construction: +0.003 M params, +1.1 MMAdds (paper Table 1: +0.02 M, +13 M)."""
    params, madds = overheads("ddw_resnet18", "resnet18")
    stages = [(64, 56), (128, 28), (256, 14), (512, 7)]  # 2 blocks per stage: 3 nodes + output, 3 edges
    routers = sum(c * 3 + 3 for c, _ in stages)
    assert params == routers + 2 * 4
    assert madds == sum(c * 3 + 3 * h * h * c for c, h in stages)
    assert params / 1e6 == pytest.approx(0.003, abs=5e-4) and madds / 1e6 == pytest.approx(1.1, abs=0.05)


def test_mobilenetv2_overheads_and_graphs():
    model = dynzoo.create_model("ddw_mobilenetv2_100")
    assert [(s.name, len(s.blocks) + 1) for s in wired_stages(model)] == [
        ("graph2", 3),
        ("graph3", 4),
        ("graph4", 5),
        ("graph5", 4),
        ("graph6", 4),
    ]  # rows with n ≥ 2
    params, madds = overheads("ddw_mobilenetv2_100", "mobilenetv2_100", model)
    graphs = [(24, 56, 2), (32, 28, 3), (64, 14, 4), (96, 14, 3), (160, 7, 3)]  # C, H, blocks
    edges = lambda n: n * (n + 1) // 2
    assert params == sum((c + 1) * edges(n) + n for c, _, n in graphs)
    assert madds == sum(edges(n) * (c + h * h * c) for c, h, n in graphs)


@pytest.mark.slow
def test_resnet50_overheads_match_the_spec_recount():
    params, madds = overheads("ddw_resnet50", "resnet50")
    assert params / 1e6 == pytest.approx(0.040, abs=1e-3)  # one router per node (paper: +0.07 M)
    assert madds / 1e6 == pytest.approx(13.6 + 0.04, abs=0.1)  # aggregation 13.6 M + routers (paper: +38 M)


def test_registry_and_builder_arguments():
    names = dynzoo.list_models("ddw_*")
    for base in ("ddw_resnet18", "ddw_resnet50", "ddw_resnet101", "ddw_mobilenetv2_100", "ddw_resnet18_cifar"):
        assert base in names and base + "_static_alpha" in names
    model = dynzoo.create_model(
        "ddw_resnet18_cifar_static_alpha", width=0.125, input_shape=(16, 16, 3), include_top=False, pooling="avg"
    )
    assert model.output.shape == (None, 64)  # 512 × 0.125
    routers = [r for s in wired_stages(model) for r in s.routers]
    assert routers and not any(r.dynamic for r in routers) and all(isinstance(r, Router) for r in routers)
    model = dynzoo.create_model(
        "ddw_resnet101", input_shape=(64, 64, 3), classes=5, width=0.125, classifier_activation=None
    )
    stage3 = model.get_layer("layer3")
    assert isinstance(stage3, WiredStage) and stage3.nodes == 24 and stage3.edge_count() == 276
    assert model.output.shape == (None, 5)
    with pytest.raises(ValueError, match="model_name"):
        DDW("ddw_resnet34")
    with pytest.raises(ValueError, match="width"):
        dynzoo.create_model("ddw_resnet18", width=0)
    with pytest.raises(ValueError, match="wiring"):
        dynzoo.create_model("ddw_resnet18", wiring="random")
    with pytest.raises(ValueError, match="at least 8"):
        dynzoo.create_model("ddw_resnet18_cifar", input_shape=(20, 6, 3))
    with pytest.raises(ValueError, match="does not match"):
        load_static_weights(
            dynzoo.create_model("ddw_resnet18_cifar", width=0.125, input_shape=(16, 16, 3)),
            dynzoo.create_model("resnet18", input_shape=(32, 32, 3)),
        )


# --- training on the offline digits ---------------------------------------------------------------

TRAIN_SIZE = 16


def train_small(model_name: str):
    from dynzoo.data import digits_arrays

    keras.utils.set_random_seed(0)
    x, y = digits_arrays("train", TRAIN_SIZE)
    model = dynzoo.create_model(model_name, input_shape=(TRAIN_SIZE, TRAIN_SIZE, 3), classes=10, width=0.25)
    model.compile(optimizer=FusedAdam(5e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x.astype("float32"), y, batch_size=64, epochs=2, verbose=0)
    return model


@pytest.fixture(scope="module")
def trained():
    from dynzoo.data import digits_arrays

    x_test, y_test = digits_arrays("test", TRAIN_SIZE)
    return train_small("ddw_resnet18_cifar"), x_test.astype("float32"), y_test


@pytest.mark.slow
def test_ddw_and_static_alpha_learn_the_digits(trained):
    model, x_test, y_test = trained
    result = adjacency_matrices(model, x_test)
    accuracy = float((result["outputs"].argmax(-1) == y_test).mean())
    # chance is 0.10; two short epochs of a ×0.25 ResNet-18 at 16×16. Measured (deterministic ops, fixed
    # seeds, dynzoo's fused Adam): 0.978, and 0.971 for the static-α network below.
    assert accuracy > 0.7, accuracy
    thresholds = np.concatenate([s.threshold.numpy() for s in wired_stages(model)])
    assert np.abs(thresholds).max() > 1e-3  # τ is learned
    per_sample_std = max(float(result[s.name].std(axis=0).max()) for s in wired_stages(model))
    assert per_sample_std > 1e-3  # the wiring differs between samples
    static_alpha = train_small("ddw_resnet18_cifar_static_alpha")
    a = adjacency_matrices(static_alpha, x_test, batch_size=64)  # one inference pass: outputs and wiring
    static_accuracy = float((a["outputs"].argmax(-1) == y_test).mean())
    assert static_accuracy > 0.7, static_accuracy
    # input-independent: the same matrices for the 64 images of one batch (batches of another size, like
    # the last one, may differ in the last bit of float32)
    assert all(np.ptp(a[s.name][:64], axis=0).max() == 0 for s in wired_stages(static_alpha))


@pytest.mark.slow
def test_trained_ddw_round_trips(trained, tmp_path):
    model, x_test, _ = trained
    model.save(tmp_path / "ddw.keras")
    loaded = keras.saving.load_model(tmp_path / "ddw.keras")
    for a, b in zip(
        wiring_model(model)(x_test[:8], training=False), wiring_model(loaded)(x_test[:8], training=False), strict=False
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_tflite_float32_reproduces_outputs_and_wiring(trained):
    from ai_edge_litert.interpreter import Interpreter

    from dynzoo.export import op_counts, to_tflite
    from dynzoo.export.tflite import check_builtin_only

    model, x_test, _ = trained
    wired = wiring_model(model)
    flatbuffer = to_tflite(wired)
    check_builtin_only(flatbuffer, wired.name)
    counts = op_counts(flatbuffer)
    assert {"LOGISTIC", "GREATER_EQUAL", "SELECT_V2", "MEAN", "FULLY_CONNECTED"} <= set(counts), counts
    expected = [np.asarray(t) for t in wired(x_test[:20], training=False)]
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    outputs = sorted(interpreter.get_output_details(), key=lambda d: d["name"])  # output_0 … in Keras' order
    assert [tuple(d["shape"]) for d in outputs] == [(1, 10)] + [(1, 3, 3)] * 4  # predictions, 4 graphs
    closed = 0
    for i, x in enumerate(x_test[:20]):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x[None])
        interpreter.invoke()
        got = [interpreter.get_tensor(d["index"])[0] for d in outputs]
        np.testing.assert_allclose(got[0], expected[0][i], rtol=0, atol=1e-4 * np.abs(expected[0]).max())
        for a, b in zip(got[1:], expected[1:], strict=False):  # every graph's adjacency matrix
            np.testing.assert_allclose(a, b[i], atol=1e-5)
            closed += int(np.sum((a == 0) != (b[i] == 0)))
    assert closed == 0  # the same edges are closed


@pytest.mark.slow
def test_int8_export_keeps_the_accuracy(trained):
    from dynzoo.data import digits_arrays
    from dynzoo.export import convert
    from dynzoo.export.tflite import float_ops, full_range_first
    from dynzoo.export.verify import parity_report

    model, x_test, y_test = trained
    x_train, _ = digits_arrays("train", TRAIN_SIZE)
    flatbuffer = convert(model, "int8", full_range_first(x_train[:64].astype("float32")))
    assert float_ops(flatbuffer) == []  # every op integer, builtin only (checked by convert)
    report = parity_report(model, flatbuffer, x_test, y_test)
    assert report["keras_accuracy"] > 0.7, report  # measured: 0.978, int8 +0.0 points, 99.8 % agreement
    assert abs(report["tflite_accuracy"] - report["keras_accuracy"]) <= 0.01, report
    assert report["top1_agreement"] >= 0.99, report
