"""``dynzoo bench --profile``: the single-op split, the layer mapping, the XNNPACK flags and the command."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from dynzoo._compat import all_layers
from dynzoo.export import op_profile
from dynzoo.export.flatbuffer import is_tflite
from dynzoo.export.tflite import convert


def _tiny_net() -> keras.Model:
    """An explicit PAD, conv, depthwise conv, a residual ADD, pooling and a softmax classifier on 16×16 inputs."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.ZeroPadding2D(1, name="pad")(inputs)  # (1, 1) at stride 2 is not SAME: the PAD stays
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="stem")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    y = keras.layers.Conv2D(8, 1, name="pointwise")(y)
    x = keras.layers.Add(name="residual")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(5, activation="softmax", name="classifier")(x), name="tiny")


def _maximum_net() -> keras.Model:
    """``max(x, x/2)`` between two 1×1 convolutions: XNNPACK takes no int8 MAXIMUM of two activations."""
    import tensorflow as tf

    inputs = keras.Input((8, 8, 16))
    x = keras.layers.Conv2D(16, 1, name="before")(inputs)
    x = keras.layers.Lambda(lambda t: tf.maximum(t, t * 0.5), name="maximum")(x)
    return keras.Model(inputs, keras.layers.Conv2D(16, 1, name="after")(x), name="maximum_net")


def _calibration(shape) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(8, *shape)).astype("float32")


@pytest.fixture(scope="module")
def tiny() -> tuple[keras.Model, dict[str, bytes]]:
    model = _tiny_net()
    data = _calibration((16, 16, 3))
    return model, {mode: convert(model, mode, data) for mode in ("float32", "int8", "float16")}


@pytest.fixture(scope="module")
def micronet() -> tuple[keras.Model, bytes]:
    """MicroNet-M0 at 32×32, float32: Dynamic Shift-Max, grouped and factorized convolutions."""
    import dynzoo

    keras.utils.set_random_seed(0)
    model = dynzoo.create_model("micronet_m0", weights=None, input_shape=(32, 32, 3), classes=10)
    return model, convert(model, "float32")


def _run_single(single: bytes, feeds: list[np.ndarray]) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=single, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()
    assert len(details) == len(feeds)
    for detail, value in zip(details, feeds, strict=False):
        interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def _check_split(flatbuffer: bytes) -> None:
    """Each single-op model, fed the whole model's values of its inputs, reproduces its outputs there."""
    infos = op_profile.op_info(flatbuffer)
    singles = op_profile.split_ops(flatbuffer)
    values = op_profile.intermediate_values(flatbuffer, seed=1)
    assert len(singles) == len(infos) > 0
    for info, single in zip(infos, singles, strict=False):
        assert is_tflite(single) and len(single) < len(flatbuffer)
        outputs = _run_single(single, [values[t] for t in info.inputs])
        assert len(outputs) == len(info.outputs)
        for got, index in zip(outputs, info.outputs, strict=False):
            want = values[index]
            assert got.shape == want.shape and got.dtype == want.dtype, (info.index, info.op)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"op {info.index} {info.op}")


@pytest.mark.parametrize("mode", ["float32", "int8", "float16"])
def test_single_op_models_reproduce_the_whole_models_tensors(tiny, mode):
    _check_split(tiny[1][mode])


def _layer_paths(layer: keras.Layer, prefix: str = "") -> set[str]:
    """``block1/dynamic_shift_max/fc1``: the path of every layer nested in ``layer``."""
    paths = set()
    for child in all_layers(layer, include_self=False, recursive=False):
        path = prefix + child.name
        paths |= {path} | _layer_paths(child, path + "/")
    return paths


def test_micronet_split_and_layer_mapping(micronet):
    model, flatbuffer = micronet
    _check_split(flatbuffer)
    paths = _layer_paths(model)
    infos = op_profile.op_info(flatbuffer)
    for info in infos:
        # Documented cases: `a + b` names every layer of a fused op; `layer → OP` an op whose tensors carry
        # no name scope, after the layer that feeds it; a part may end in a name scope inside its layer
        # (`logits_bn/batchnorm`): some leading part of it must be a real layer path.
        base = info.layer.split(" → ")[0]
        assert info.layer_inferred == (" → " in info.layer), info
        for part in base.split(" + "):
            pieces = part.split("/")
            assert any("/".join(pieces[:n]) in paths for n in range(1, len(pieces) + 1)), (info.index, info.layer)
    assert {i.layer.split("/")[0] for i in infos} >= {"stem", "block1", "block2"}
    assert any("dynamic_shift_max" in i.layer for i in infos if i.op == "BATCH_MATMUL")


def test_xnnpack_flags_an_int8_maximum_and_takes_the_convolutions():
    model = _maximum_net()
    int8 = convert(model, "int8", _calibration((8, 8, 16)))
    flags, partitions = op_profile.xnnpack_delegation(int8)
    ops = [info.op for info in op_profile.op_info(int8)]
    assert "MAXIMUM" in ops and ops.count("CONV_2D") == 2
    by_op = {op: [f for o, f in zip(ops, flags, strict=False) if o == op] for op in set(ops)}
    assert by_op["MAXIMUM"] == [False] and by_op["CONV_2D"] == [True, True]
    assert partitions == 2

    profile = op_profile.profile_ops(int8, runs=6, warmup=1, rounds=2, label="maximum_int8")
    assert [o.op for o in profile.ops] == ops and [o.xnnpack for o in profile.ops] == flags
    assert profile.partitions == 2 and all(o.us >= 0 and o.error is None for o in profile.ops)
    first, last = (o.layer for o in profile.ops if o.op == "CONV_2D")
    # the model's output tensor takes the signature's name (no scope): the op is shown after its input's layer
    assert first == "before" and last in ("after", "maximum → CONV_2D")
    maximum_row = next(line for line in profile.table().splitlines() if "| MAXIMUM |" in line)
    assert "| no |" in maximum_row

    flags, partitions = op_profile.xnnpack_delegation(convert(model, "float32"))
    assert all(flags) and partitions == 1


def test_profile_totals_tables_and_files(tiny, tmp_path):
    flatbuffer = tiny[1]["float32"]
    profile = op_profile.profile_ops(flatbuffer, runs=6, warmup=1, rounds=2, label="tiny")
    assert len(profile.ops) == len(op_profile.op_info(flatbuffer)) and all(o.xnnpack for o in profile.ops)
    assert profile.model_us > 0 and profile.overhead_us >= 0 and profile.total_us >= 0
    layers = profile.layers()
    assert sum(r.ops for r in layers) == len(profile.ops)
    assert [r.us for r in layers] == sorted((r.us for r in layers), reverse=True)
    assert {r.layer for r in layers} >= {"stem", "pointwise", "classifier"}
    # the PAD is timed with the convolution it feeds (XNNPACK folds it in)
    ((pad, conv),) = op_profile.pad_pairs(flatbuffer).items()
    assert profile.ops[pad].op == "PAD" and profile.ops[conv].op == "CONV_2D" and profile.ops[pad].with_op == conv
    assert f"(with #{conv})" in profile.table()
    md, js, png = profile.write(tmp_path / "tiny", header="a header line")
    assert md.name == "tiny_profile.md" and "a header line" in md.read_text() and "## Per Keras layer" in md.read_text()
    data = json.loads(js.read_text())
    assert data["partitions"] == 1 and len(data["ops"]) == len(profile.ops) and data["layers"][0]["layer"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        op_profile.profile_ops(b"not a model at all")
    with pytest.raises(ValueError, match="runs"):
        op_profile.profile_ops(flatbuffer, runs=0)


def test_cli_profile_writes_markdown_json_and_plot(tiny, tmp_path, capsys):
    from dynzoo.cli import main

    path = tmp_path / "tiny_int8.tflite"
    path.write_bytes(tiny[1]["int8"])
    stem = tmp_path / "out" / "tiny"
    assert (
        main(["bench", "--profile", str(path), "--runs", "4", "--warmup", "1", "--rounds", "1", "-o", str(stem)]) == 0
    )
    out = capsys.readouterr().out
    assert "Sum of the per-op times" in out and "tiny_profile.md" in out
    for suffix in (".md", ".json", ".png"):
        assert (tmp_path / "out" / f"tiny_profile{suffix}").stat().st_size > 0
    data = json.loads((tmp_path / "out" / "tiny_profile.json").read_text())
    assert data["model"] == "tiny_int8" and data["num_threads"] == 1 and data["xnnpack"] is True
    assert "bench --profile" in (tmp_path / "out" / "tiny_profile.md").read_text()

    # a .keras file is exported in --mode first (int8: calibrated on noise)
    tiny[0].save(tmp_path / "tiny.keras")
    assert (
        main(
            [
                "bench",
                "--profile",
                str(tmp_path / "tiny.keras"),
                "--mode",
                "int8",
                "--calibration-size",
                "4",
                "--runs",
                "4",
                "--warmup",
                "1",
                "--rounds",
                "1",
                "--xnnpack",
                "off",
                "-o",
                str(tmp_path / "k"),
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "k_profile.json").read_text())
    assert data["model"] == "tiny_int8" and data["xnnpack"] is False and data["partitions"] == 0
    assert {op["dtype"] for op in data["ops"]} <= {"int8", "int32"} and not any(op["xnnpack"] for op in data["ops"])


def test_cli_profile_errors_are_one_line(tmp_path, capsys):
    from dynzoo.cli import main

    (tmp_path / "notes.tflite").write_text("not a flatbuffer")
    cases = [
        (["no_such_model"], "unknown model 'no_such_model'"),
        ([str(tmp_path / "missing.tflite")], "no such .tflite file"),
        ([str(tmp_path / "notes.tflite")], "is not a TFLite flatbuffer"),
        (["micronet_m0", "micronet_m3"], "--profile takes one model, got 2"),
        ([], "--profile takes one model, got 0"),
        (["micronet_m0", "--mode", "int8", "--mode", "float32"], "--profile takes one --mode"),
        (["micronet_m0", "--threads", "1", "2"], "--profile takes one --threads"),
        (["micronet_m0", "--xnnpack", "both"], "--profile takes --xnnpack on or off"),
    ]
    for argv, message in cases:
        assert main(["bench", "--profile", *argv, "-o", str(tmp_path / "x")]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "--profile" in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not list(tmp_path.glob("x*"))
