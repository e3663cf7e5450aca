"""CovNorm adapters: statistics and PCA (eq. 2.10 merge exact), the whitening · M · colouring chain
reproducing the fine-tuned adapter (eq. 2.8), parameter counts, adapter insertion on a frozen backbone,
round trips, builtin-only TFLite and argument errors."""

import keras
import numpy as np
import pytest
from keras import ops

import dynzoo
from dynzoo.layers.covnorm import (
    CovNormAdapter,
    feature_statistics,
    merge_statistics,
    pca,
)
from dynzoo.models.drt import adapter_statistics, covnorm_adapters, insert_adapters

RNG = np.random.default_rng(1)
AFTER = ("relu1", "relu2", "features")


def test_merged_statistics_equal_the_pooled_data():
    parts = [RNG.normal(i, 1 + i, size=(50 * (i + 1), 6)) @ RNG.normal(size=(6, 6)) for i in range(3)]
    merged = merge_statistics([feature_statistics(p) for p in parts])
    pooled = np.concatenate(parts)
    n = len(pooled)
    assert merged.count == n
    np.testing.assert_allclose(merged.mean, pooled.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(merged.covariance, np.cov(pooled.T, bias=True), rtol=1e-9, atol=1e-9)


def test_pca_keeps_the_fewest_components_reaching_the_threshold():
    scales = np.array([10.0, 5.0, 1.0, 0.1])
    x = RNG.normal(size=(4000, 4)) * scales
    variances = scales**2 / (scales**2).sum()  # ≈ 0.7968, 0.1992, 0.0080, 0.0001
    stats = feature_statistics(x @ np.linalg.qr(RNG.normal(size=(4, 4)))[0])
    assert len(pca(stats, 0.79).components) == 1
    assert len(pca(stats, 0.99).components) == 2
    assert len(pca(stats, 0.999).components) == 3
    assert pca(stats, 0.99).explained == pytest.approx(variances[:2].sum(), abs=0.005)
    assert len(pca(stats, 0.999, max_rank=2).components) == 2
    with pytest.raises(ValueError, match="threshold"):
        pca(stats, 0.0)


def _trained_full_adapter(d=6):
    adapter = CovNormAdapter(name="a")
    adapter.build((None, 4, 4, d))
    adapter.kernel.assign(RNG.normal(size=(d, d)).astype("float32"))
    adapter.bias.assign(RNG.normal(size=(d,)).astype("float32"))
    for bn in (adapter.bn1, adapter.bn2):
        bn.moving_mean.assign(RNG.normal(size=d).astype("float32"))
        bn.moving_variance.assign(RNG.uniform(0.5, 2, size=d).astype("float32"))
    return adapter


def test_full_rank_covnorm_reproduces_the_fine_tuned_adapter():
    adapter = _trained_full_adapter()
    x = RNG.normal(size=(8, 4, 4, 6)).astype("float32")
    u, y = adapter.transfer_terms(x)
    stats = [(feature_statistics(ops.convert_to_numpy(u)), feature_statistics(ops.convert_to_numpy(y)))]
    (full_rank,) = covnorm_adapters([adapter], stats, threshold=1.0)
    assert (full_rank.rank_in, full_rank.rank_out) == (6, 6)
    np.testing.assert_allclose(
        ops.convert_to_numpy(full_rank(x)), ops.convert_to_numpy(adapter(x)), rtol=1e-4, atol=1e-4
    )


def test_truncated_covnorm_is_exact_on_low_rank_features():
    # inputs living in a 2-D subspace and an output that is rank 3: the truncated chain loses nothing
    d = 8
    adapter = _trained_full_adapter(d)
    adapter.kernel.assign((RNG.normal(size=(d, 3)) @ RNG.normal(size=(3, d))).astype("float32"))
    adapter.bn1.moving_mean.assign(np.zeros(d, "float32"))
    adapter.bn1.moving_variance.assign(np.ones(d, "float32") - 1e-5)
    x = (RNG.normal(size=(64, 2)) @ RNG.normal(size=(2, d)) + RNG.normal(size=d)).astype("float32")
    u, y = adapter.transfer_terms(x)
    stats = [(feature_statistics(ops.convert_to_numpy(u)), feature_statistics(ops.convert_to_numpy(y)))]
    (small,) = covnorm_adapters([adapter], stats, threshold=0.999999)
    assert small.rank_in == 2 and small.rank_out <= 3
    np.testing.assert_allclose(ops.convert_to_numpy(small(x)), ops.convert_to_numpy(adapter(x)), rtol=1e-3, atol=1e-3)
    # trainable: M and its bias only (W_x, C_y fixed, Algorithm 1 step 4 freezes the BNs separately)
    assert {w.name for w in small.trainable_weights} >= {"mini_adaptation", "mini_bias"}
    assert not {"whitening", "colouring"} & {w.name for w in small.trainable_weights}
    assert small.task_parameters() == small.count_params()
    assert adapter.task_parameters() == adapter.count_params()
    assert small.task_parameters(absorbed=True) == 8 * d + 2 * d * min(small.rank_in, small.rank_out) + 2 * d


@pytest.mark.parametrize(
    "kwargs,shape,name",
    [
        ({"rank_in": 9, "rank_out": 2}, (None, 8), "rank_in"),
        ({"rank_in": 2, "rank_out": 9}, (None, 8), "rank_out"),
        ({"rank_in": 0, "rank_out": 2}, None, "rank_in"),
        ({"rank_in": 2}, None, "rank_out"),
    ],
)
def test_bad_ranks_are_refused(kwargs, shape, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        CovNormAdapter(**kwargs).build(shape)


@pytest.fixture(scope="module")
def backbone():
    keras.utils.set_random_seed(0)
    net = dynzoo.create_model("drt_lenet_static", input_shape=(32, 32, 3), classes=10, classifier_activation=None)
    trunk = keras.Model(net.inputs, net.get_layer("features").output)
    trunk.trainable = False
    return trunk


@pytest.mark.slow
def test_adapters_on_a_frozen_shared_backbone(backbone, tmp_path):
    from dynzoo.export import run_tflite, to_tflite

    with pytest.raises(ValueError, match="after"):
        insert_adapters(backbone, ["relu9"])
    adapted = insert_adapters(backbone, AFTER, name="task_a")
    model = keras.Model(adapted.inputs, keras.layers.Dense(10, name="head")(adapted.outputs[0]))
    adapters = [adapted.get_layer(f"adapter_{n}") for n in AFTER]
    # only the adapters and the new head train; the backbone's weights are the same objects
    trainable = {id(v) for v in model.trainable_weights}
    assert trainable == {id(v) for a in adapters for v in a.trainable_weights} | {
        id(v) for v in model.get_layer("head").trainable_weights
    }
    assert model.get_layer("conv2") is backbone.get_layer("conv2")

    images = RNG.uniform(0, 255, size=(16, 32, 32, 3)).astype("float32")
    for a in adapters:  # pretend step 1 trained them
        a.kernel.assign(RNG.normal(0, 0.1, size=a.kernel.shape).astype("float32"))
    stats = adapter_statistics(adapted, adapters, images)
    assert [s[0].mean.shape for s in stats] == [(16,), (32,), (128,)]
    new = covnorm_adapters(adapters, stats, threshold=0.9)
    cov = insert_adapters(backbone, AFTER, dict(zip(AFTER, new, strict=False)), name="task_a_covnorm")
    assert all(a.rank_in <= a.channels and a.rank_out <= a.channels for a in new)

    cov.save(tmp_path / "cov.keras")
    loaded = keras.saving.load_model(tmp_path / "cov.keras")
    x = images[:2]
    expected = cov.predict(x, verbose=0)
    np.testing.assert_array_equal(expected, loaded.predict(x, verbose=0))
    flatbuffer = to_tflite(cov)  # raises on any non-builtin op
    np.testing.assert_allclose(run_tflite(flatbuffer, x[:1]), expected[:1], rtol=1e-4, atol=1e-4)

    # joint variant: one global PCA per position, only M (and BNs) per task
    global_pcas = [(pca(merge_statistics([s[0], s[0]]), 0.9), pca(merge_statistics([s[1], s[1]]), 0.9)) for s in stats]
    joint = covnorm_adapters(adapters, stats, pcas=global_pcas)
    for a, (p_in, _p_out) in zip(joint, global_pcas, strict=False):
        np.testing.assert_array_equal(ops.convert_to_numpy(a.whitening), p_in.components.T)
        assert a.joint_task_parameters() == 8 * a.channels + a.rank_in * a.rank_out + a.rank_out
    with pytest.raises(ValueError, match="already a CovNorm"):
        covnorm_adapters(new, stats)


def test_task_batchnorms_train_only_their_own_copies(backbone):
    from dynzoo.models.drt import task_batchnorm_parameters, task_batchnorms

    task = task_batchnorms(backbone, name="task_bn")
    bns = [layer for layer in task.layers if isinstance(layer, keras.layers.BatchNormalization)]
    originals = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == len(originals) > 0 and not {id(b) for b in bns} & {id(b) for b in originals}
    # every trainable weight is a BatchNorm copy's; the convolutions are the backbone's own objects
    assert {id(v) for v in task.trainable_weights} == {id(v) for b in bns for v in b.trainable_weights}
    assert task.get_layer("conv2") is backbone.get_layer("conv2")
    assert task_batchnorm_parameters(task) == sum(b.count_params() for b in bns)
    x = RNG.uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(task.predict(x, verbose=0), backbone.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
