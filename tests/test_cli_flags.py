"""Command-line flags: spelled with hyphens (``--input-size``) in every command and benchmark script, the
underscore spellings (``--input_size``) accepted too, and a ``dynzoo`` command that imports TensorFlow only
for the commands that need it."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dynzoo.cli import build_parser, hyphenate_flags, main
from dynzoo.train.cli import FLAGS, hyphenated, underscore_flags

REPO = Path(__file__).resolve().parent.parent
UNDERSCORE_FLAG = re.compile(r"--[a-z0-9]+(?:_[a-z0-9]+)+\b")


def test_hyphenate_flags_rewrites_option_names_only():
    argv = ["export", "micronet_m0", "--input_size=32", "--data_dir", "a_b", "-o", "x_y", "--", "--keep_me"]
    assert hyphenate_flags(argv) == [
        "export",
        "micronet_m0",
        "--input-size=32",
        "--data-dir",
        "a_b",
        "-o",
        "x_y",
        "--",
        "--keep_me",
    ]


def test_underscore_flags_spells_absl_names():
    argv = ["--batch-size=64", "--model_dir", "runs/a-b", "--no-sync-bn", "--nosync-bn", "--no-such-flag=1"]
    assert underscore_flags(argv) == [
        "--batch_size=64",
        "--model_dir",
        "runs/a-b",
        "--nosync_bn",
        "--nosync_bn",
        "--no_such_flag=1",  # not a boolean flag: absl names it in its error
    ]
    assert underscore_flags(["--", "--keep-me"]) == ["--", "--keep-me"]
    assert hyphenated("flag --[no]check_images: x_y; Unknown command line flag 'no_such_flag'") == (
        "flag --[no]check-images: x_y; Unknown command line flag 'no-such-flag'"
    )


def parse(argv: list[str]) -> argparse.Namespace:
    """What ``dynzoo ARGV`` parses, without running the command."""
    argv = hyphenate_flags(argv)
    args, extra = build_parser(argv[0]).parse_known_args(argv)
    assert not extra, extra
    return args


def underscored(argv: list[str]) -> list[str]:
    return ["--" + a[2:].replace("-", "_") if a.startswith("--") else a for a in argv]


# argv with a hyphenated flag, attribute, expected value
COMMAND_FLAGS = [
    (["eval", "--input-size", "64"], "input_size", 64),
    (["eval", "--no-check-images"], "check_images", False),
    (["quickstart", "--run-dir", "d"], "run_dir", "d"),
    (["profile", "m", "--input-size", "64"], "input_size", 64),
    (["weights", "publish", "m.keras", "--tag", "t", "--out-dir", "d"], "out_dir", "d"),
    (["weights", "download", "m", "--allow-unpinned"], "allow_unpinned", True),
    (["export", "m", "--calibration-size", "8"], "calibration_size", 8),
    (["bench", "--no-baselines"], "no_baselines", True),
    (["serve-demo", "--log-requests"], "log_requests", True),
]


@pytest.mark.parametrize("argv, name, value", COMMAND_FLAGS, ids=[" ".join(c[0]) for c in COMMAND_FLAGS])
def test_each_command_takes_both_spellings(argv, name, value):
    assert getattr(parse(argv), name) == value
    assert getattr(parse(underscored(argv)), name) == value


def test_train_takes_both_spellings(capsys):
    """absl defines ``batch_size``; ``--batch-size`` reaches it too, and its errors name the hyphenated flag."""
    try:
        for argv in (["--batch-size=8", "--no-flip"], ["--batch_size=8", "--noflip"]):
            FLAGS.unparse_flags()
            FLAGS(["dynzoo train", *underscore_flags(argv)])
            assert FLAGS.batch_size == 8 and FLAGS.flip is False
    finally:
        FLAGS.unparse_flags()
    for flag in ("--crop-scale", "--crop_scale"):  # parsed, then refused before anything trains
        assert main(["train", f"{flag}=0.5,big"]) == 2
        assert "dynzoo train: error: --crop-scale: expected comma-separated floats" in capsys.readouterr().err
    assert main(["train", "--batch-size=abc"]) == 2
    assert "flag --batch-size=abc" in capsys.readouterr().err


def help_text(argv: list[str], capsys) -> str:
    try:
        status = main(argv)
    except SystemExit as stop:
        status = stop.code
    assert status == 0, argv
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--help"], "serve-demo"),
        (["train", "--help"], "--batch-size"),
        (["eval", "--help"], "--skip-bad-images"),
        (["quickstart", "--help"], "--run-dir"),
        (["profile", "--help"], "--input-size"),
        (["weights", "publish", "--help"], "--out-dir"),
        (["export", "--help"], "--calibration-size"),
        (["bench", "--help"], "--no-baselines"),
        (["serve-demo", "--help"], "--log-requests"),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else None,
)
def test_help_shows_the_hyphenated_flags(argv, flag, capsys):
    out = help_text(argv, capsys)
    assert flag in out
    assert not UNDERSCORE_FLAG.findall(out), UNDERSCORE_FLAG.findall(out)


# benchmark script, argv with a hyphenated flag, attribute, expected value
BENCHMARK_FLAGS = [
    ("input_pipeline", ["--pipeline-batches", "3"], "pipeline_batches", 3),
    ("drt_digits", ["--alignment-weight", "0.5"], "alignment_weight", 0.5),
    ("covnorm_digits", ["--covnorm-epochs", "2"], "covnorm_epochs", 2),
    ("qat_accuracy", ["--qat-epochs", "3"], "qat_epochs", 3),
    ("ddw_digits", ["--batch-size", "8"], "batch_size", 8),
    ("ddn_digits", ["--pool-epochs", "2"], "pool_epochs", 2),
    ("cdb_digits", ["--target-flops", "0.5"], "target_flops", 0.5),
    ("ddw_memory", ["--batch-size", "4"], "batch_size", 4),
    ("cdb_latency", ["--input-size", "64"], "input_size", 64),
    ("drnet_digits", ["--latency-images", "5"], "latency_images", 5),
]


class Parsed(Exception):
    pass


def benchmark_args(script: str, argv: list[str], monkeypatch) -> argparse.Namespace:
    """The arguments ``python benchmarks/SCRIPT.py ARGV`` parses; the benchmark itself does not run."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(f"benchmark_{script}", REPO / "benchmarks" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parse_args = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise Parsed(parse_args(self, args, namespace))

    monkeypatch.setattr(sys, "argv", [f"{script}.py", *argv])
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    with pytest.raises(Parsed) as parsed:
        module.main()
    return parsed.value.args[0]


@pytest.mark.parametrize("script, argv, name, value", BENCHMARK_FLAGS, ids=[b[0] for b in BENCHMARK_FLAGS])
def test_benchmark_scripts_take_both_spellings(script, argv, name, value, monkeypatch, capsys):
    assert getattr(benchmark_args(script, argv, monkeypatch), name) == value
    assert getattr(benchmark_args(script, underscored(argv), monkeypatch), name) == value
    with pytest.raises(SystemExit):
        benchmark_args(script, ["--help"], monkeypatch)
    out = capsys.readouterr().out
    assert argv[0] in out and not UNDERSCORE_FLAG.findall(out), UNDERSCORE_FLAG.findall(out)


LIGHT_COMMANDS = """
import sys
sys.argv[0] = "dynzoo"  # as the console script runs
import dynzoo.cli
for argv in (["--help"], ["--version"], ["serve-demo", "--help"]):
    try:
        dynzoo.cli.main(argv)
    except SystemExit:
        pass
print("light:", sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))
import dynzoo
print("api:", dynzoo.list_models("micronet_m0"), "keras" in sys.modules)
"""


def test_help_and_serve_demo_do_not_import_tensorflow():
    """``dynzoo --help``, ``--version`` and ``serve-demo`` start without TensorFlow or Keras; the API loads on
    first use."""
    done = subprocess.run(
        [sys.executable, "-c", LIGHT_COMMANDS],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "light: []" in done.stdout, done.stdout[-2000:]
    assert "api: ['micronet_m0'] True" in done.stdout


def test_the_console_script_stays_light():
    script = Path(sys.executable).with_name("dynzoo")
    if not script.is_file():
        pytest.skip("no installed `dynzoo` console script next to this Python")
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(script), "serve-demo", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--log-requests" in done.stdout
    assert "| dynzoo.cli" in done.stderr  # the -X importtime table
    assert not re.search(r"\| (tensorflow|keras)\b", done.stderr)
