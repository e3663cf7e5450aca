"""dynzoo.export: conversion in every mode (builtin ops only, loud failures naming op and layer),
latency in a subprocess, the bundle and its reference preprocessing, baking, and the CLI."""

from __future__ import annotations

import functools
import json

import keras
import numpy as np
import pytest

import dynzoo
from dynzoo._compat import all_layers
from dynzoo.export import (
    MODES,
    ExportError,
    compare_latency,
    convert,
    convert_modes,
    measure_latency,
    op_names,
    preprocess,
    read_bundle,
    run_tflite,
    write_bundle,
)
from dynzoo.export.op_profile import xnnpack_delegation
from dynzoo.export.tflite import exportable, float_ops
from dynzoo.export.verify import tensor_errors
from dynzoo.models.bake import bake, frozen_coefficients
from dynzoo.models.common import IMAGENET_MEAN, IMAGENET_STD

SIZE = 32


def tiny_model(classes: int = 4) -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="fc")(x)
    return keras.Model(inputs, outputs, name="tiny")


def calibration(n: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, SIZE, SIZE, 3)).astype("float32")


def micronet(**kwargs) -> keras.Model:
    keras.utils.set_random_seed(0)
    return dynzoo.create_model("micronet_m0", input_shape=(SIZE, SIZE, 3), classes=10, **kwargs)


# --- conversion -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def micronet_export(tmp_path_factory):
    """MicroNet-M0 (32×32, preprocessing inside), its calibration images (0…255, a full-range ramp first)
    and ``flatbuffer(mode)``: each mode converted once for the module, all from one SavedModel export.
    The mode matrix, the float-op naming and the bundle tests share them."""
    from dynzoo.export.tflite import full_range_first, save_for_conversion

    model = micronet()
    data = full_range_first(np.random.default_rng(0).uniform(0, 255, (8, SIZE, SIZE, 3)).astype("float32"))
    saved = save_for_conversion(model, tmp_path_factory.mktemp("micronet_export") / "saved_model")
    return model, data, functools.cache(lambda mode: convert(model, mode, data, saved_model=saved))


# Every registered model converts to float32 in its family's own tests; every mode is checked here on
# one MicroNet, and float, full int8 and mixed on one DCD network (int16x8 of DCD on the official
# weights in test_dcd_models.py; the whole model × mode matrix takes 15–20 minutes on 2 cores).
@pytest.mark.slow
def test_micronet_exports_in_every_mode(micronet_export):
    model, data, flatbuffer = micronet_export
    check_exports(model, {mode: flatbuffer(mode) for mode in MODES}, data)


# DCD-MobileNetV2 ×0.5 with 6 of its 17 inverted residual blocks (one of each of the rows 1-4, two of the
# 160-filter row): at 32×32 they still hold every form of its DCD layers that the whole network has there —
# 2×2-pooled expanding and globally pooled projecting DCDConv2D, each in the kernel form (8×8 to 16×16) and
# the parallel form (2×2 to 4×4), the 2×2 pooling of a 1×1 map, a residual block, the DCDDense classifier —
# in a third of its graph (conversion time follows the graph's size).
DCD_BLOCKS = [
    {"expansion": 1, "filters": 16, "repeats": 1, "stride": 1},
    {"expansion": 6, "filters": 24, "repeats": 1, "stride": 2},
    {"expansion": 6, "filters": 32, "repeats": 1, "stride": 2},
    {"expansion": 6, "filters": 64, "repeats": 1, "stride": 2},
    {"expansion": 6, "filters": 160, "repeats": 2, "stride": 2},
]


@pytest.mark.slow
def test_dcd_exports_in_float_int8_and_mixed(monkeypatch):
    from dynzoo.layers.dcd import DCDConv2D
    from dynzoo.models import mobilenetv2

    config = mobilenetv2.load_config
    monkeypatch.setattr(mobilenetv2, "load_config", lambda family: {**config(family), "blocks": DCD_BLOCKS})
    keras.utils.set_random_seed(1)
    model = dynzoo.create_model(
        "dcd_mobilenetv2_050", input_shape=(SIZE, SIZE, 3), classes=10, include_preprocessing=False
    )
    forms = set()
    for block in (layer for layer in model.layers if layer.name.startswith("block")):
        size = block.input.shape[1]
        for step in (s for s in block.steps if isinstance(s, DCDConv2D)):
            if step is not block.steps[0]:  # the projecting layer, after the strided depthwise conv
                size = block.input.shape[1] // block.strides
            shape = (None, size, size, step.in_channels)
            forms.add((step.pool_size, step._uses_kernel_form(keras.KerasTensor(shape)), size))
    assert {(pool, kernel) for pool, kernel, _ in forms} == {(1, True), (1, False), (2, True), (2, False)}
    assert (2, False, 1) in forms and any(block.residual for block in model.layers if block.name.startswith("block"))
    data = calibration(4)
    check_exports(model, convert_modes(model, ("float32", "int8", "mixed"), data), data)


def check_exports(model: keras.Model, flatbuffers: dict[str, bytes], data: np.ndarray) -> None:
    """Builtin ops only in every mode; every flatbuffer runs; float32 matches Keras to 1e-4 relative;
    integer modes have no float op and no Flex op."""
    micronet_m0 = model.name == "micronet_m0"
    expected = np.asarray(model(data[:2], training=False))  # eager: predict would trace the model once more
    for mode, flatbuffer in flatbuffers.items():
        ops = op_names(flatbuffer)
        assert not [op for op in ops if op.startswith("CUSTOM")], (mode, ops)
        # a sound conversion folds variables (the concrete-function path keeps them and runs 7× slower)
        assert not {"VAR_HANDLE", "READ_VARIABLE"} & set(ops), mode
        got = run_tflite(flatbuffer, data[:2])
        assert got.shape == expected.shape and np.isfinite(got).all(), mode
        if mode == "float32":
            assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
        if mode in ("int8", "uint8", "int16x8"):
            assert float_ops(flatbuffer) == [], mode
        if mode in ("int8", "uint8") and micronet_m0:  # the full-integer export form, all in XNNPACK
            assert not {"MAXIMUM", "BATCH_MATMUL", "HARD_SWISH"} & set(ops), mode
            assert xnnpack_delegation(flatbuffer)[1] == 1, mode
        if mode == "int16x8" and micronet_m0:  # Dynamic Shift-Max element-wise (see convert)
            assert "BATCH_MATMUL" not in ops
        elif mode == "float32" and micronet_m0:  # its narrow layers as matrix products
            assert "BATCH_MATMUL" in ops


def test_flex_op_fails_and_names_the_layer():
    import tensorflow as tf

    inputs = keras.Input((4, 4))
    outputs = keras.layers.Lambda(tf.linalg.inv, name="matrix_inverse")(inputs)  # needs TF Select (Flex)
    with pytest.raises(ExportError, match=r"MatrixInverse \(layer matrix_inverse\)"):
        convert(keras.Model(inputs, outputs, name="inverting"), "float32")


@pytest.mark.slow
def test_a_float_op_in_an_integer_model_is_named_with_its_layer(micronet_export):
    """Mixed mode keeps the Dynamic Shift-Max element-wise ops in float on purpose: the integer-mode
    check must list exactly those, by layer."""
    found = float_ops(micronet_export[2]("mixed"))
    assert found and all("dynamic_shift_max" in layer for _, layer in found)
    assert {op for op, _ in found} <= {
        "MUL",
        "ADD",
        "MAXIMUM",
        "SUB",
        "FULLY_CONNECTED",
        "MEAN",
        "RESHAPE",
        "SPLIT",
        "STRIDED_SLICE",
        "CONCATENATION",
        "RELU6",
        "RELU",
    }
    assert {"MUL", "MAXIMUM"} <= {op for op, _ in found}


def test_calibrated_modes_need_data_and_modes_are_checked():
    with pytest.raises(ValueError, match="representative_data"):
        convert(tiny_model(), "int8")
    with pytest.raises(ValueError, match="`mode` must be one of"):
        convert(tiny_model(), "int4")


def test_uint8_io_and_int8_io():
    model = tiny_model()
    flatbuffers = convert_modes(model, ["int8", "uint8"], calibration())
    from dynzoo.export.bundle import tensor_io_info

    assert tensor_io_info(flatbuffers["int8"])["input"]["dtype"] == "int8"
    assert tensor_io_info(flatbuffers["uint8"])["input"]["dtype"] == "uint8"
    assert tensor_io_info(flatbuffers["uint8"])["output"]["dtype"] == "uint8"


@pytest.mark.parametrize("mode", ["int16x8", "int8"])
def test_integer_forms_of_hard_swish_are_exact(mode):
    """TFLite has no int16 HARD_SWISH and XNNPACK no int8 one: those modes export an equivalent clone."""
    model = micronet()
    friendly = exportable(model, mode)
    assert friendly is not model and exportable(model, "float32") is model
    x = calibration(2) * 60 + 120
    np.testing.assert_allclose(friendly(x, training=False), model(x, training=False), rtol=0, atol=1e-6)


def test_int8_scales_are_fitted_to_what_xnnpack_takes(monkeypatch):
    """A term that calibration sees nearly zero (Dynamic Shift-Max's ``b · x̂`` while b is near 0) gets a
    scale below 1/1024 of its sum's, where XNNPACK refuses the int8 ADD and splits the graph. The pass
    raises that scale to the bound: one partition, and the same int8 outputs to one step."""
    from dynzoo.export import tflite
    from dynzoo.export.bundle import tensor_io_info

    inputs = keras.Input((8, 8, 16))
    main = keras.layers.Conv2D(16, 1, name="main")(inputs)
    small = keras.layers.Conv2D(16, 1, name="small")(inputs)
    summed = keras.layers.Add()([main, keras.layers.Rescaling(1e-5)(small)])
    model = keras.Model(inputs, keras.layers.Conv2D(8, 1, name="head")(summed))
    data = np.random.default_rng(0).normal(size=(16, 8, 8, 16)).astype("float32")
    fitted = convert(model, "int8", data)
    monkeypatch.setattr(tflite, "fit_xnnpack_scales", lambda flatbuffer: flatbuffer)
    calibrated = convert(model, "int8", data)
    assert (xnnpack_delegation(calibrated)[1], xnnpack_delegation(fitted)[1]) == (2, 1)
    for xnnpack in (True, False):  # XNNPACK's kernels and LiteRT's own
        steps = np.abs(run_tflite(fitted, data, xnnpack=xnnpack) - run_tflite(calibrated, data, xnnpack=xnnpack))
        assert steps.max() <= tensor_io_info(fitted)["output"]["quantization"]["scale"] * 1.001


def test_int16x8_gives_layers_with_equal_biases_their_own_bias_scale(monkeypatch):
    """Two dense layers with the same non-zero bias (as DCD's folded ``+3`` of every gate) share one
    bias tensor after conversion; int16x8 quantizes it for one of them only — unrepaired, the second
    layer's outputs are off by the ratio of the two scales (DCD-MobileNetV2 fell to chance)."""
    from dynzoo.export import tflite

    inputs = keras.Input((8,))
    first = keras.layers.Dense(8, name="first")
    second = keras.layers.Dense(8, name="second")
    hidden = second(keras.layers.ReLU()(first(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden))
    rng = np.random.default_rng(0)
    first.set_weights([rng.normal(0, 0.5, (8, 8)).astype("float32"), np.full(8, 3.0, "float32")])
    second.set_weights([rng.normal(0, 0.02, (8, 8)).astype("float32"), np.full(8, 3.0, "float32")])
    model.get_layer("head").set_weights([np.eye(8, 2, dtype="float32"), np.zeros(2, "float32")])  # exact in int8
    x = rng.normal(0, 1, (64, 8)).astype("float32")
    expected = model.predict(x, verbose=0)
    tolerance = 2e-3 * np.abs(expected).max()

    repaired = convert(model, "int16x8", x)
    first_bias, second_bias = _bias_inputs(repaired)[:2]
    assert first_bias != second_bias
    np.testing.assert_allclose(run_tflite(repaired, x), expected, atol=tolerance)

    monkeypatch.setattr(tflite, "unshare_biases", lambda flatbuffer: flatbuffer)
    shared = convert(model, "int16x8", x)  # the converter's own output
    first_bias, second_bias = _bias_inputs(shared)[:2]
    assert first_bias == second_bias
    assert np.abs(run_tflite(shared, x) - expected).max() > 50 * tolerance

    # The per-tensor comparison with the float32 model points at the layer that goes wrong.
    reference = convert(model, "float32")
    healthy = tensor_errors(reference, repaired, x[:4])
    broken = tensor_errors(reference, shared, x[:4])
    assert [e["op"] for e in healthy] == ["FULLY_CONNECTED", "FULLY_CONNECTED"]  # the output is not compared
    assert max(e["relative_error"] for e in healthy) < 0.01  # int8 weights: ~0.2 %
    assert [e["relative_error"] > 0.1 for e in broken] == [False, True]
    assert "second" in broken[1]["layer"]


def _bias_inputs(flatbuffer: bytes) -> list[int]:
    from dynzoo.export.flatbuffer import read_model

    _, model = read_model(flatbuffer)
    return [int(op.inputs[2]) for op in model.subgraphs[0].operators if len(op.inputs) > 2]


# --- latency ----------------------------------------------------------------------------------------


def test_latency_in_a_subprocess_and_a_broken_model_is_an_error_not_a_crash(tmp_path):
    flatbuffer = convert(tiny_model(), "float32")
    for xnnpack in (True, False):
        result = measure_latency(flatbuffer, num_threads=1, xnnpack=xnnpack, warmup=2, runs=20)
        assert result.ok and 0 < result.min_ms <= result.median_ms <= result.p90_ms
        assert result.peak_memory_mb > 0 and result.xnnpack is xnnpack
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(flatbuffer[: len(flatbuffer) // 3])
    result = measure_latency(broken, runs=2)
    assert not result.ok and result.median_ms is None and result.error
    with pytest.raises(ValueError, match="num_threads"):
        measure_latency(flatbuffer, num_threads=0)


def test_compare_latency_times_models_side_by_side_and_reports_errors(tmp_path):
    small = convert(tiny_model(), "float32")
    path = tmp_path / "small.tflite"
    path.write_bytes(small)
    result = compare_latency({"bytes": small, "file": path}, reference="file", warmup=1, cycles=4, block=2)
    assert result.ok and result.reference == "file" and (result.cycles, result.block) == (4, 2)
    assert set(result.median_ms) == set(result.ratio) == {"bytes", "file"}
    assert all(t > 0 for t in result.median_ms.values())
    assert result.ratio["file"] == result.ratio_p10["file"] == result.ratio_p90["file"] == 1.0
    assert 0 < result.ratio_p10["bytes"] <= result.ratio["bytes"] <= result.ratio_p90["bytes"]
    assert len(result.cycle_ms["bytes"]) == 4 and result.ratio_between("bytes", "file") == result.ratio["bytes"]
    assert result.ratio_between("file", "bytes") == pytest.approx(
        np.median(np.divide(result.cycle_ms["file"], result.cycle_ms["bytes"]))
    )
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(small[: len(small) // 3])
    failed = compare_latency({"small": small, "broken": broken}, cycles=1)
    assert not failed.ok and failed.error and not failed.median_ms
    for kwargs, match in (({"reference": "other"}, "reference"), ({"cycles": 0}, "cycles"), ({"block": 1.5}, "block")):
        with pytest.raises(ValueError, match=match):
            compare_latency({"small": small}, **kwargs)
    with pytest.raises(ValueError, match="no such .tflite file"):
        compare_latency({"missing": tmp_path / "missing.tflite"})
    with pytest.raises(ValueError, match="at least one"):
        compare_latency({})


# --- bundle -----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["float32", "uint8"])
def test_bundle_with_golden_files_round_trips(tmp_path, micronet_export, mode):
    from dynzoo.export.bundle import golden_image

    flatbuffer = micronet_export[2](mode)
    folder = write_bundle(
        tmp_path / "b",
        flatbuffer,
        labels=[f"digit {i}" for i in range(10)],
        source_model="micronet_m0",
        mode=mode,
        preprocessing_in_model=True,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        output_activation="softmax",
        golden=True,
    )
    loaded, labels, info = read_bundle(folder)
    assert loaded == flatbuffer and labels[3] == "digit 3" and info["mode"] == mode
    assert info["input"]["height"] == SIZE and info["input"]["color_order"] == "RGB"
    golden = json.loads((folder / "golden" / "golden.json").read_text())
    x = preprocess(golden_image(), info)
    assert list(x.shape) == golden["input_shape"] == [1, SIZE, SIZE, 3]
    assert (folder / "golden" / "input.bin").read_bytes() == x.astype(x.dtype.newbyteorder("<")).tobytes()
    assert (folder / "golden" / "image.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if mode == "uint8":  # raw pixels go in unchanged: scale 1, zero point 0
        assert info["input"]["quantization"] == {"scale": 1.0, "zero_point": 0}
        assert x.dtype == np.uint8 and golden["output_dtype"] == "uint8"
    else:
        assert info["input"]["quantization"] is None and x.dtype == np.float32
    scores = [score for _, score in golden["top_k"]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-6


def test_preprocess_follows_the_bundle_rules():
    """Resize the shorter side, centre crop, normalise, quantize half away from zero."""
    info = {
        "input": {
            "height": 4,
            "width": 4,
            "dtype": "int8",
            "preprocessing_in_model": False,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.5, 1.0],
            "resize": {"method": "bilinear", "resize_shorter": 4, "crop": "center"},
            "quantization": {"scale": 0.5, "zero_point": -3},
        }
    }
    image = np.zeros((4, 8, 3), "uint8")
    image[:, 2:6] = 255  # the centre 4 columns are white
    x = preprocess(image, info)
    assert x.shape == (1, 4, 4, 3) and x.dtype == np.int8
    # white: v = (1 − 0.5) / std = 2, 1, 0.5 → v / 0.5 = 4, 2, 1 → + zero point −3
    np.testing.assert_array_equal(x[0, 0, 0], [1, -1, -2])
    info["input"]["quantization"] = {"scale": 0.8, "zero_point": 0}  # 0.5 / 0.8 = 0.625 → 1; 1 / 0.8 → 1
    image = np.full((4, 4, 3), 255, "uint8")
    info["input"]["std"] = [0.5, 0.5, 0.5]
    np.testing.assert_array_equal(preprocess(image, info)[0, 0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="uint8"):
        preprocess(image.astype("float32"), info)


# --- baking -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_baking_one_samples_coefficients_reproduces_that_sample_exactly(tmp_path):
    model = micronet(include_top=False)
    x = np.random.default_rng(3).uniform(0, 255, (3, SIZE, SIZE, 3)).astype("float32")
    # widen the coefficient branches (initialised at N(0, 0.01)) so that samples get different coefficients
    rng = np.random.default_rng(4)
    for layer in all_layers(model):
        if type(layer).__name__ == "DynamicShiftMax":
            for dense in (layer.fc1, layer.fc2):
                dense.kernel.assign(rng.normal(0, 0.5, dense.kernel.shape))
    frozen = frozen_coefficients(model, x[:1])
    baked = bake(model, frozen)
    assert not any(type(l).__name__ == "DynamicShiftMax" for l in all_layers(baked))
    assert baked.count_params() < model.count_params()
    # eager calls: predict would trace each model again for every batch size
    call = lambda m, inputs: np.asarray(m(inputs, training=False))  # noqa: E731
    np.testing.assert_array_equal(call(baked, x[:1]), call(model, x[:1]))
    # another sample has other coefficients: the frozen network is a different function there
    assert np.abs(call(baked, x[1:]) - call(model, x[1:])).max() > 1e-4
    path = tmp_path / "baked.keras"
    baked.save(path)
    expected = call(baked, x)
    np.testing.assert_array_equal(call(keras.saving.load_model(path), x), expected)
    flatbuffer = convert(baked, "float32")
    assert "DYNAMIC" not in " ".join(op_names(flatbuffer))
    assert np.abs(run_tflite(flatbuffer, x) - expected).max() <= 1e-4 * np.abs(expected).max()


def test_baking_checks_layer_names():
    with pytest.raises(ValueError, match="does not have"):
        bake(micronet(), {"block9/steps/0": [np.ones(4)] * 4})


# --- command line -----------------------------------------------------------------------------------


# The command-line tests run the smallest registered dynamic network, DRT's digit LeNet (a dynamic residual
# on every conv; it converts about 4× faster than MicroNet-M0): what they check is the commands' files and
# reports, and MicroNet-M0 itself is converted in every mode, bundled and timed in the tests above.
@pytest.mark.slow
def test_cli_export_with_verify_and_bundle(tmp_path, capsys):
    from dynzoo.cli import main

    code = main(
        [
            "export",
            "drt_lenet",
            "--input-size",
            "32",
            "--classes",
            "10",
            "--mode",
            "uint8",
            "--preprocessing-in-model",
            "--calibration-size",
            "16",
            "--verify",
            "digits",
            "--verify-size",
            "24",
            "--bundle",
            "--golden",
            "-o",
            str(tmp_path),
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "drt_lenet_report.json").read_text())
    entry = report["modes"]["uint8"]
    assert entry["op_counts"] and set(entry["parity"]) >= {"max_abs_error", "top1_agreement", "keras_accuracy"}
    assert entry["worst_layers"] and entry["worst_layers"][0]["rmse_per_scale"] > 0
    read_bundle(tmp_path / "drt_lenet_uint8")
    assert (tmp_path / "drt_lenet_uint8" / "golden" / "output.bin").exists()
    assert "uint8" in capsys.readouterr().out


def test_cli_errors_are_one_line(capsys, tmp_path):
    from dynzoo.cli import main

    assert main(["export", "micronet_m0", "--golden"]) == 2
    assert "--golden needs --bundle" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")
    assert main(["export", "micronet_m0", "-o", str(tmp_path / "a_file")]) == 2
    assert "is a file; the export writes a folder" in capsys.readouterr().err
    (tmp_path / "cut.keras").write_bytes(b"PK\x03\x04 truncated")
    assert main(["export", str(tmp_path / "cut.keras")]) == 2
    err = capsys.readouterr().err
    assert "is not a .keras file (a zip archive): it is truncated" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_bench_writes_json_markdown_and_plot(tmp_path):
    from dynzoo.cli import main

    stem = tmp_path / "bench"
    assert (
        main(
            [
                "bench",
                "drt_lenet",
                "--input-size",
                "32",
                "--threads",
                "1",
                "--xnnpack",
                "on",
                "--runs",
                "5",
                "--warmup",
                "1",
                "--rounds",
                "1",
                "--no-baselines",
                "-o",
                str(stem),
            ]
        )
        == 0
    )
    bench = json.loads(stem.with_suffix(".json").read_text())
    (row,) = bench["results"]
    assert row["model"] == "drt_lenet" and row["median_ms"] > 0 and row["madds"] > 0
    assert "drt_lenet" in stem.with_suffix(".md").read_text()
    assert stem.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


# --- export-friendly forms of the MicroNet operators -------------------------------------------------


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 6, 12, 24])
def test_channel_shift_by_slices_equals_the_partner_gather(groups):
    from dynzoo.layers.shift_max import partner_indices, shift_to_partners

    x = np.random.default_rng(0).normal(size=(2, 3, 5, 24)).astype("float32")
    np.testing.assert_array_equal(np.asarray(shift_to_partners(x, groups)), x[..., partner_indices(24, groups)])


@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("kernel, strides", [((3, 1), (2, 1)), ((1, 5), (1, 2)), ((5, 1), (2, 1))])
def test_unequal_strides_equal_the_stride_one_convolution_subsampled(depthwise, kernel, strides):
    """One strided (grouped) convolution, as exported, equals the stride-1 one taken every s-th row."""
    from dynzoo.layers import SymmetricConv2D, SymmetricDepthwiseConv2D
    from dynzoo.layers.base import export_form

    x = np.random.default_rng(1).normal(size=(2, 12, 10, 4)).astype("float32")
    if depthwise:
        strided = SymmetricDepthwiseConv2D(kernel, strides, depth_multiplier=2)
        dense = SymmetricDepthwiseConv2D(kernel, 1, depth_multiplier=2)
    else:
        strided, dense = SymmetricConv2D(6, kernel, strides), SymmetricConv2D(6, kernel, 1)
    with export_form():
        y = np.asarray(strided(x))
    dense.build(x.shape)
    dense.set_weights(strided.get_weights())
    expected = np.asarray(dense(x))[:, :: strides[0], :: strides[1]]
    assert y.shape == expected.shape == strided.compute_output_shape(x.shape)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)
    if depthwise:  # exported as one strided CONV_2D, no subsampling slice
        assert "STRIDED_SLICE" not in op_names(convert(_wrap(strided, x.shape[1:]), "float32"))


def _wrap(layer, shape) -> keras.Model:
    inputs = keras.Input(shape)
    return keras.Model(inputs, layer(inputs))
