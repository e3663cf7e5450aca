"""CDB-ResNets: counts against the paper and the spec's recount, gates and effective FLOPs, losses, category
maps, TFLite export (builtin IF skipping), `.keras` round trip, argument checks, and training through
``dynzoo.train.train`` with ``target_flops``."""

import json

import keras
import numpy as np
import pytest

import dynzoo
from dynzoo.data.categories import CIFAR100_CLASSES, category_map, category_matrix
from dynzoo.models.cdb import (
    CDBResNet,
    analyze_gates,
    cdb_blocks,
    check_target_rate,
    force_gates,
    gate_costs,
    gate_model,
)
from dynzoo.profile import effective_profile, profile
from dynzoo.train.families.cdb import (
    CategoryLoss,
    CDBTrainer,
    ExecutionRateLoss,
    FlopsRatioLoss,
    stage_category_weights,
)

RNG = np.random.default_rng(0)


def tiny(**kwargs):
    """A narrow CDB-ResNet-10 at 32×32 (4 blocks, N = 2)."""
    return CDBResNet("cdb_resnet10_cifar", width_multiplier=0.25, **kwargs)


def images(n=4, size=32):
    return RNG.uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def cdb50_counts():
    """(params, MAdds, controller params) of CDB-ResNet-50 for N = 1, 2, 3 at 224×224, and under the key
    "costs" the gate costs of the registered CDB-ResNet-50 (N = 2), built once for both tests below."""
    counts = {}
    for groups in (1, 2, 3):
        model = CDBResNet("cdb_resnet50", groups=groups)
        p = profile(model)
        controllers = sum(int(np.prod(w.shape)) for b in cdb_blocks(model) for w in b.controller.trainable_weights)
        counts[groups] = (p.params, p.madds, controllers)
        if groups == 2:  # the registered cdb_resnet50's default
            counts["costs"] = gate_costs(model)
    return counts


def test_cdb50_counts_match_the_paper_and_the_recount(cdb50_counts):
    ref = dynzoo.registry.get_entry
    for groups, name in ((2, "cdb_resnet50"), (3, "cdb_resnet50_n3")):
        params, madds, controllers = cdb50_counts[groups]
        reference = ref(name).reference
        assert abs(params / 1e6 - reference["paper_params_m"]) / reference["paper_params_m"] < 0.02  # Table 2
        assert params / 1e6 == pytest.approx(reference["recount_params_m"], abs=0.002)  # our recount, Table 1 widths
        assert madds / 1e9 == pytest.approx(reference["recount_gmacs_all_on"], abs=0.001)
    # Without controllers, N = 2 counts 24.007 M (recount); N = 1 is exactly ResNet-50 (25.557 M, 4.089 GMACs).
    assert cdb50_counts[2][0] - cdb50_counts[2][2] == 24_007_248
    params, madds, controllers = cdb50_counts[1]
    resnet = profile(dynzoo.create_model("resnet50"))
    assert params - controllers == resnet.params == 25_557_032
    assert madds / 1e9 == pytest.approx(4.0896, abs=1e-3)
    assert 0 < madds - resnet.madds < 2e-4 * resnet.madds  # 16 controllers: "about 0.02 % of the FLOPs" (§3.2.2)


def test_group_madds_of_cdb50_match_the_spec(cdb50_counts):
    costs = cdb50_counts["costs"]
    # Spec §2.3, N = 2 (MMAdds): first block 78.9, stride-1 blocks 101.8, first blocks of stages 2–4 132.3.
    np.testing.assert_allclose(costs.group[[0, 1, 3, 7, 13]] / 1e6, [78.9, 101.8, 132.3, 132.3, 132.3], atol=0.05)
    assert len(costs.group) == 16 and list(np.bincount(costs.stages)[1:]) == [3, 4, 6, 3]
    assert costs.static + 2 * costs.group.sum() == costs.total


@pytest.mark.slow
def test_gates_effective_flops_and_profiler():
    model = tiny(classes=10)
    x = images(6)
    gated = gate_model(model)  # shares the network's layers: built (and traced) once for every analysis below
    y, gates = (np.asarray(t) for t in gated(x, training=False))
    assert gates.shape == (6, 4, 2) and set(np.unique(gates)) <= {0.0, 1.0}
    np.testing.assert_allclose(y, model(x, training=False), rtol=1e-6)
    force_gates(model, [1, 0])
    report = analyze_gates(model, x, gated=gated)
    assert (report.gates == [1, 0]).all()
    costs = report.costs
    np.testing.assert_array_equal(report.madds, costs.static + costs.group.sum())
    assert report.flops_ratio == pytest.approx((costs.static + costs.group.sum()) / costs.total)
    assert report.stage_figures()[1] == {"execution_rate": 0.5, "flops_ratio": 0.5}
    force_gates(model, np.array([[1, 1], [0, 0], [1, 0], [0, 1]]))
    report = analyze_gates(model, x, gated=gated)
    assert [f["execution_rate"] for f in report.stage_figures().values()] == [1.0, 0.0, 0.5, 0.5]
    table = effective_profile(model, x)
    full = profile(model)
    blocks = cdb_blocks(model)
    for _i, (row, base) in enumerate(zip(table.layers, full.layers, strict=False)):
        if row.name == blocks[1].name:
            assert row.madds == base.madds - 2 * costs.group[1]
        elif row.name not in {b.name for b in blocks[::2]} | {blocks[3].name}:
            assert row.madds == base.madds
    assert table.madds == int(report.madds.mean())


def test_losses():
    gates = keras.ops.convert_to_tensor(np.array([[[1, 0], [1, 1]], [[0, 0], [1, 1]]], "float32"))  # (B=2, L=2, N=2)
    assert float(ExecutionRateLoss(0.5)(gates)) == pytest.approx((0.5 - 0.25) ** 2 + (0.5 - 1.0) ** 2)

    class Costs:
        group, static, total = np.array([10, 20]), 20, 80

    # f per sample: 20 + 10·1 + 20·2 = 70 and 20 + 0 + 40 = 60 → mean 65 / 80.
    assert float(FlopsRatioLoss(0.6, Costs)(gates)) == pytest.approx((65 / 80 - 0.6) ** 2)
    assert float(FlopsRatioLoss(65 / 80, Costs)(gates)) == pytest.approx(0.0, abs=1e-12)  # zero at f/f_total = r
    cmap = np.array([0, 1, 1, 0])
    logits = RNG.normal(size=(2, 2, 2)).astype("float32")
    weights = stage_category_weights([1, 2], 1e-4, 10.0)
    np.testing.assert_allclose(weights, [1e-4, 1e-3])
    labels = np.array([1, 3])
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = sum(w * -np.mean([log_p[b, l, cmap[labels[b]]] for b in range(2)]) for l, w in enumerate(weights))
    loss = CategoryLoss(cmap, weights)
    assert float(loss(keras.ops.convert_to_tensor(labels), logits)) == pytest.approx(expected, rel=1e-5)
    one_hot = np.eye(4, dtype="float32")[labels]
    assert float(loss(keras.ops.convert_to_tensor(one_hot), logits)) == pytest.approx(expected, rel=1e-5)


def test_trainer_adds_the_losses_to_the_classification_loss():
    network = tiny(classes=10, classifier_activation=None)
    trainer = CDBTrainer(network, target_rate=0.5, category_map="digits")
    trainer.compile(optimizer="sgd")  # no compiled loss: plain cross-entropy on the logits
    x, labels = images(8), np.arange(8) % 10
    y = np.eye(10, dtype="float32")[labels]
    logits, gates, categories = (t.numpy() for t in trainer(x, training=True))
    assert gates.shape == (8, 4, 2) and categories.shape == (8, 4, 5)
    total = float(trainer.compute_loss(x, y, [logits, gates, categories]))
    ce = float(np.mean(keras.losses.categorical_crossentropy(y, logits, from_logits=True)))
    costs = gate_costs(network)
    expected = (
        ce
        + float(CategoryLoss(category_map("digits"), stage_category_weights(costs.stages, 1e-4, 10))(y, categories))
        + float(ExecutionRateLoss(0.5)(gates))
        + float(FlopsRatioLoss(0.5, costs)(gates))
    )
    assert total == pytest.approx(expected, rel=1e-5)
    assert float(FlopsRatioLoss(0.5, costs).ratio(gates).numpy().mean()) == pytest.approx(
        costs.effective(gates).mean() / costs.total, rel=1e-5
    )


def test_category_maps():
    cifar = category_map("cifar100", 100)
    assert len(CIFAR100_CLASSES) == 100 and np.bincount(cifar).tolist() == [5] * 20
    assert cifar[:10].tolist() == [4, 1, 14, 8, 0, 6, 7, 7, 18, 3]  # CIFAR-100's coarse labels of classes 0–9
    digits = category_map("digits", 10)
    assert np.bincount(digits).tolist() == [2] * 5 and digits[0] == digits[8]
    np.testing.assert_array_equal(category_map({"0": 1, "1": 0, "2": 1}), [1, 0, 1])
    np.testing.assert_array_equal(category_matrix(np.array([1, 0, 1])), [[0, 1], [1, 0], [0, 1]])
    for bad, message in (
        ([0, 2, 2], "0…K−1"),
        ([0, 0], "at least 2"),
        ({0: 0, 2: 1}, "every class"),
        ("imagenet", "cifar100"),
        ([0.5, 1], "integer"),
        ([0, 1, 1], "covers 3 classes"),
    ):
        with pytest.raises(ValueError, match=message):
            category_map(bad, 2 if message == "covers 3 classes" else None)


@pytest.mark.slow
def test_tflite_export_skips_with_builtin_if_ops_and_matches_keras():
    from dynzoo.export import op_counts, run_tflite, to_tflite

    model = tiny(classes=10)
    force_gates(model, [1, 0])
    flatbuffer = to_tflite(model)
    counts = op_counts(flatbuffer)
    assert counts["IF"] == 4 * 2  # one builtin IF per group: a switched-off group is not run
    assert not any(op.startswith(("CUSTOM", "FLEX")) for op in counts)
    x = images(3)
    np.testing.assert_allclose(run_tflite(flatbuffer, x), model(x, training=False), atol=1e-5)


def test_keras_round_trip_is_exact(tmp_path):
    model = tiny(classes=7, dropout_rate=0.1)
    x = images(3)
    expected = gate_model(model)(x, training=False)
    model.save(tmp_path / "cdb.keras")
    loaded = keras.models.load_model(tmp_path / "cdb.keras")
    for a, b in zip(expected, gate_model(loaded)(x, training=False), strict=False):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_registered_models_and_variants():
    names = dynzoo.list_models("cdb_*")
    assert {
        "cdb_resnet18",
        "cdb_resnet50",
        "cdb_resnet50_n3",
        "cdb_resnet50_n4",
        "cdb_resnet101",
        "cdb_resnet50_cifar",
    } <= set(names)
    cifar = dynzoo.create_model("cdb_resnet50_cifar", width_multiplier=0.125)
    assert cifar.input_shape == (None, 32, 32, 3) and cifar.output_shape == (None, 100)
    assert cdb_blocks(cifar)[0].input.shape[1:3] == (16, 16)  # stage 1 at 16×16: 0.33 GFLOPs baseline
    assert len(cdb_blocks(CDBResNet("cdb_resnet101", input_shape=(64, 64, 3), width_multiplier=0.0625))) == 33
    resnet18 = CDBResNet(
        "cdb_resnet18", input_shape=(64, 64, 3), width_multiplier=0.25, groups=4, include_top=False, pooling="avg"
    )
    assert resnet18.output_shape == (None, 128) and cdb_blocks(resnet18)[0].groups == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"groups": 0}, "`groups`"),
        ({"width_multiplier": 0}, "`width_multiplier`"),
        ({"input_shape": (40, 15, 3)}, "at least 16"),
        ({"dropout_rate": 1.0}, "`dropout_rate`"),
    ],
)
def test_bad_builder_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CDBResNet("cdb_resnet10_cifar", **kwargs)


def test_bad_target_rates():
    for bad in (0.0, 1.5, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match=r"`target_flops` must be a number in \(0, 1\]"):
            check_target_rate("target_flops", bad)
    with pytest.raises(ValueError, match="`target`"):
        ExecutionRateLoss(0)
    with pytest.raises(ValueError, match="`target`"):
        CDBTrainer(tiny(classes=10), target_rate=1.2)
    from dynzoo.train.hooks import TrainingContext, prepare_training

    context = TrainingContext(1, 1, images(2).astype("uint8"), 0)
    with pytest.raises(ValueError, match="`target_flops`"):
        prepare_training("cdb", tiny(classes=10), {"target_flops": 0.0}, context)
    with pytest.raises(ValueError, match="all_groups_on"):
        prepare_training("cdb", tiny(classes=10), {"all_groups_on": True, "target_flops": 0.5}, context)
    with pytest.raises(ValueError, match="`category_map`"):
        prepare_training("cdb", tiny(classes=10), {"category_map": "cifar100"}, context)  # 100 classes ≠ 10


@pytest.mark.slow
def test_training_with_target_flops_through_the_trainer(tmp_path):
    """A short digits run through ``dynzoo.train.train``: the FLOPs ratio is pulled from ~1 to the target,
    the network learns, the losses, logs and summary carry the CDB figures."""
    from dynzoo.train import TrainConfig, train

    result = train(
        TrainConfig(
            model="cdb_resnet10_cifar",
            dataset="digits",
            overrides={"epochs": 3},
            steps_per_epoch=12,
            model_dir=str(tmp_path),
            verbose=0,
            validation_freq=0,
            options={"target_flops": 0.6, "category_map": "digits"},
        )
    )
    history = result.history
    for key in (
        "category_loss",
        "exec_loss",
        "flops_loss",
        "exec_rate",
        "flops_ratio",
        "inference_flops_ratio",
        "inference_stage1_exec_rate",
        "inference_stage4_flops_ratio",
    ):
        assert key in history, key
    assert history["category_loss"][-1] < history["category_loss"][0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["options"]["target_flops"] == 0.6
    assert 0.45 <= summary["flops_ratio"] <= 0.75  # from 1.0 at the start (every group on)
    assert summary["test_top1"] > 0.6  # chance is 0.1; measured (deterministic ops, fixed seeds): 0.829
    x, _y = dynzoo.data.digits_arrays("test", 32)
    report = analyze_gates(result.model, x[:200].astype("float32"))
    assert report.flops_ratio == pytest.approx(summary["flops_ratio"], abs=0.1)
    assert set(summary["stages"]) == {"1", "2", "3", "4"}
    loaded = keras.models.load_model(tmp_path / "model.keras")
    x8 = x[:8].astype("float32")
    np.testing.assert_allclose(loaded(x8, training=False), result.model(x8, training=False), atol=1e-6)
