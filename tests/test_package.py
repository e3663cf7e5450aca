"""The package as a user meets it: registry, CLI, installation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import dynzoo

REPO = Path(__file__).resolve().parent.parent


def test_list_models_and_patterns():
    names = dynzoo.list_models()
    assert names == sorted(names)
    assert dynzoo.list_models("micronet_*") == ["micronet_m0", "micronet_m1", "micronet_m2", "micronet_m3"]
    assert dynzoo.list_models("no_such_*") == []


def test_unknown_model_suggests_the_closest_names():
    with pytest.raises(ValueError, match="Did you mean 'micronet_m1'"):
        dynzoo.create_model("micronet_m1x")
    with pytest.raises(ValueError, match="unknown model"):
        dynzoo.create_model("resnet9000_zzz")


def test_builders_have_the_keras_applications_signature():
    import inspect

    from dynzoo.models import MicroNetM0
    from dynzoo.registry import get_entry

    expected = [
        "input_shape",
        "include_top",
        "weights",
        "input_tensor",
        "pooling",
        "classes",
        "classifier_activation",
        "include_preprocessing",
        "dropout_rate",
        "name",
    ]
    assert list(inspect.signature(MicroNetM0).parameters) == [*expected, "feature_levels"]
    assert inspect.signature(MicroNetM0).parameters["feature_levels"].kind is inspect.Parameter.KEYWORD_ONLY
    assert MicroNetM0(input_shape=(64, 64, 3)).name == "micronet_m0"
    for name in dynzoo.list_models():  # every family, also those added later
        builder = get_entry(name).builder
        assert list(inspect.signature(builder).parameters)[: len(expected)] == expected, name


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "dynzoo.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO.parent,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_profile_prints_the_table():
    result = run_cli("profile", "micronet_m0")
    assert result.returncode == 0, result.stderr
    assert "1,019,590 parameters, 4.05M MAdds" in result.stdout
    assert "block7" in result.stdout


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``dynzoo ARGV`` in this process: (exit status, stdout, stderr). The subprocess test above covers the
    entry point itself."""
    from dynzoo.cli import main

    try:
        status = main(argv)
    except SystemExit as stop:  # argparse's usage errors
        status = stop.code
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_compare_and_errors(capsys):
    status, out, err = cli(["profile", "--compare", "micronet_m0", "micronet_m3"], capsys)
    assert status == 0, err
    assert "| micronet_m3 | 2,622,960 | 2,622,960 |" in out
    status, out, err = cli(["profile", "micronet_zz"], capsys)
    assert status == 2
    assert "unknown model 'micronet_zz'" in err and "Traceback" not in err
    status, out, err = cli(["profile", "micronet_m0", "--input-size", "16"], capsys)
    assert status == 2 and "--input-size" in err


def test_installed_package_is_self_contained():
    """Configs and ``dynzoo.export`` come with the installed package, whatever the working folder."""
    import dynzoo.export
    from dynzoo.config import config_dir, load_config

    assert config_dir().joinpath("micronet.json").is_file() and "models" in load_config("micronet")
    assert callable(dynzoo.export.to_tflite)
    if os.environ.get("CI"):  # CI installs non-editable: nothing may come from the checkout
        for module in (dynzoo, dynzoo.export):
            assert REPO not in Path(module.__file__).resolve().parents, module.__file__


@pytest.mark.slow
def test_saved_models_of_every_family_load_after_import_dynzoo_alone(tmp_path):
    """``keras.models.load_model`` in a fresh process that imports nothing but ``dynzoo``: the families'
    blocks (e.g. DCD-MobileNetV2's InvertedResidual) must be registered by that import."""
    import keras

    keras.utils.set_random_seed(0)
    model = dynzoo.create_model("dcd_mobilenetv2_035", input_shape=(32, 32, 3), classes=3)
    model.save(tmp_path / "model.keras")
    script = (
        "import sys, keras, dynzoo\nmodel = keras.models.load_model(sys.argv[1], compile=False)\nprint(model.name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model.keras")],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "dcd_mobilenetv2_035"


@pytest.mark.parametrize(
    "argv, env, shown",
    [
        (["dynzoo", "quickstart"], {}, False),
        (["dynzoo", "--verbose", "quickstart"], {}, True),
        (["dynzoo", "quickstart"], {"DYNZOO_VERBOSE": "1"}, True),
        (["python", "script.py"], {}, True),
    ],
)
def test_the_command_hides_native_log_lines_unless_asked(argv, env, shown, monkeypatch, capfd):
    """The ``dynzoo`` command raises TensorFlow's C++ log level and hides what native code writes to stderr
    around the converter and the interpreter; ``--verbose`` or ``DYNZOO_VERBOSE=1`` keep them, and a program that
    imports dynzoo as a library is left alone. Checked on the function that ``import dynzoo`` runs, with
    each command line; the real command's quiet output is checked on the quickstart's fresh process."""
    from dynzoo import logs

    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(logs, "_quiet", False)
    for name in ("TF_CPP_MIN_LOG_LEVEL", "DYNZOO_VERBOSE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    logs.quiet_native_logs_in_the_command()
    with logs.native_stderr_quiet():
        os.write(2, b"I0000 a native line\n")  # as native code writes: to the file descriptor
    assert ("I0000 a native line" in capfd.readouterr().err) is shown
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == (None if shown else "2")
