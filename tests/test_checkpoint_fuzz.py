"""The fuzzing gate of the .pth reader: its corpus replayed, then 20 seconds of atheris
(``fuzz_checkpoints.py``; README, "Fuzzing the checkpoint reader")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from checkpoint_invariants import check_load, decode_input, wrap_pickle

HERE = Path(__file__).parent
CORPUS = HERE / "checkpoint_corpus"
FUZZ_SECONDS = 20  # the gate; long campaigns run by hand (README)


@pytest.fixture(scope="module")
def micronet_m0():
    import dynzoo

    return dynzoo.create_model("micronet_m0", weights=None, input_shape=(32, 32, 3))


def test_the_corpus_holds_the_seeds_in_every_layout():
    names = {p.name for p in CORPUS.iterdir()}
    for layout in ("zip", "wrapped", "nested"):
        assert {f"seed-{layout}", f"seed-{layout}-legacy"} <= names
    assert "seed-views-pickle" in names


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.iterdir()))
def test_corpus_input_keeps_the_invariants(name, micronet_m0):
    data = (CORPUS / name).read_bytes()
    loaded = check_load(decode_input(data), micronet_m0)
    if name.startswith("seed-"):  # seeds are valid checkpoints: they must load
        assert loaded is not None and loaded != {}


def test_the_value_check_catches_a_value_from_outside_the_file():
    """The invariant that stands for "no out-of-bounds read": an array element absent from the file."""
    import numpy as np
    from checkpoint_invariants import assert_values_come_from_the_file

    file_bytes = wrap_pickle(b"")
    assert_values_come_from_the_file({"w": np.arange(4, dtype="<f4")}, file_bytes)
    with pytest.raises(AssertionError, match="not in the file"):
        assert_values_come_from_the_file({"w": np.array([4.6e-44, 1234.5], "<f4")}, file_bytes)


def test_twenty_seconds_of_fuzzing_find_nothing(tmp_path):
    pytest.importorskip("atheris")
    scratch = tmp_path / "new_inputs"
    scratch.mkdir()
    command = [
        sys.executable,
        str(HERE / "fuzz_checkpoints.py"),
        f"-max_total_time={FUZZ_SECONDS}",
        "-max_len=65536",
        "-timeout=10",
        "-rss_limit_mb=3072",
        f"-artifact_prefix={tmp_path}/",
        "-print_final_stats=1",
        str(scratch),
        str(CORPUS),
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=FUZZ_SECONDS + 240,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    findings = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert done.returncode == 0 and not findings, (
        f"the fuzzer found inputs that break the reader ({findings}; copy them into {CORPUS} as "
        f"finding-…):\n{done.stderr[-4000:]}"
    )
    executions = [line for line in done.stderr.splitlines() if "stat::number_of_executed_units" in line]
    assert executions and int(executions[0].split(":")[-1]) > 1000, done.stderr[-2000:]
