"""Bundles are replaced whole (a re-export or a killed export leaves the old bundle or the new one, and
no golden file of another model), and every reader refuses a tampered bundle with the file and field."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from dynzoo.cli import main as dynzoo_main
from dynzoo.export import convert, read_bundle, write_bundle
from dynzoo.models.common import IMAGENET_MEAN, IMAGENET_STD

LABELS = ["zero", "one", "two"]


def _flatbuffer(seed: int) -> bytes:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, strides=2)(inputs))
    return convert(keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)), "float32")


@pytest.fixture(scope="module")
def models():
    return _flatbuffer(0), _flatbuffer(1)


def _write(folder: Path, flatbuffer: bytes, golden: bool) -> Path:
    return write_bundle(
        folder,
        flatbuffer,
        labels=LABELS,
        source_model="tiny",
        mode="float32",
        preprocessing_in_model=True,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        output_activation="softmax",
        golden=golden,
    )


def test_a_re_export_replaces_the_bundle_whole(models, tmp_path):
    old, new = models
    folder = _write(tmp_path / "bundle", old, golden=True)
    golden = json.loads((folder / "golden" / "golden.json").read_text())
    assert golden["tflite_sha256"] == read_bundle(folder)[2]["tflite_sha256"]
    _write(folder, new, golden=False)  # before: golden/ of the old model stayed beside the new model
    assert read_bundle(folder)[0] == new and not (folder / "golden").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging folder left


def test_golden_files_of_another_model_are_refused(models, tmp_path):
    old, new = models
    stale = _write(tmp_path / "old", old, golden=True) / "golden"
    folder = _write(tmp_path / "new", new, golden=False)
    os.rename(stale, folder / "golden")
    with pytest.raises(ValueError, match=r"golden/golden\.json: was computed for the model"):
        read_bundle(folder)


def _tamper(folder: Path, edit) -> None:
    info = json.loads((folder / "model_info.json").read_text())
    edit(info)
    (folder / "model_info.json").write_text(json.dumps(info))


@pytest.mark.parametrize(
    "tampering, message",
    [
        (
            lambda f, m: (f / "model.tflite").write_bytes(m[1]),
            r"model\.tflite: sha256 is .* but model_info\.json expects",
        ),
        (lambda f, m: (f / "labels.txt").unlink(), r"labels\.txt: missing"),
        (lambda f, m: (f / "labels.txt").write_text("zero\none\n"), r"labels\.txt: has 2 labels but .*num_classes = 3"),
        (
            lambda f, m: _tamper(f, lambda i: i["input"].update(std=[0, 0, 0])),
            r"`input\.std` must be three numbers > 0",
        ),
        (lambda f, m: _tamper(f, lambda i: i.pop("input")), r"`input\.height` must be a positive integer, got None"),
        (
            lambda f, m: _tamper(f, lambda i: i["input"].update(preprocessing_in_model="no")),
            r"`input\.preprocessing_in_model` must be true or false",
        ),
        (lambda f, m: (f / "model_info.json").write_text("{'input': 1}"), r"model_info\.json: invalid JSON"),
    ],
)
def test_a_tampered_bundle_is_refused_naming_the_file_and_field(models, tmp_path, tampering, message, capsys):
    folder = _write(tmp_path / "bundle", models[0], golden=False)
    tampering(folder, models)
    with pytest.raises(ValueError, match=message):
        read_bundle(folder)
    # `dynzoo eval` reads bundles with read_bundle: one line, exit status 2, before any image is read
    assert dynzoo_main(["eval", "--tflite", str(folder), "--dataset", "digits", "--limit", "4"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"bundle {str(folder)!r}" in err


_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
import numpy as np
from dynzoo.export import bundle

folder, model_file, when = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
swap = bundle._exchange

def dying_swap(a, b):
    if when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    swapped = swap(a, b)
    os.kill(os.getpid(), signal.SIGKILL)

bundle._exchange = dying_swap
bundle.write_bundle(folder, Path(model_file).read_bytes(), labels=["zero", "one", "two"], source_model="tiny",
                    mode="float32", preprocessing_in_model=True, mean=[0.5] * 3, std=[0.5] * 3,
                    output_activation="softmax", golden=True)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="the atomic exchange is Linux's renameat2")
def test_an_export_killed_at_the_swap_leaves_the_old_or_the_new_bundle(models, tmp_path):
    old, new = models
    (tmp_path / "new.tflite").write_bytes(new)
    folders = {when: _write(tmp_path / when, old, golden=True) for when in ("before", "after")}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    processes = {
        when: subprocess.Popen(
            [sys.executable, "-c", _KILLED_WRITER, str(folder), str(tmp_path / "new.tflite"), when],
            env=env,
            cwd=tmp_path,
            stderr=subprocess.PIPE,
        )
        for when, folder in folders.items()
    }
    for process in processes.values():
        _, err = process.communicate(timeout=300)
        assert process.returncode == -signal.SIGKILL, err.decode()[-2000:]
    # killed before the swap: entirely old, golden files included; right after it: entirely new
    for when, expected in (("before", old), ("after", new)):
        flatbuffer, _, info = read_bundle(folders[when])
        assert flatbuffer == expected, when
        golden = json.loads((folders[when] / "golden" / "golden.json").read_text())
        assert golden["tflite_sha256"] == info["tflite_sha256"], when
        assert np.fromfile(folders[when] / "golden" / "input.bin", "<f4").size == 32 * 32 * 3
