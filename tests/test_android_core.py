"""The Android demo's plain-JVM core (``android_demo/core``) on real bundles written by the Python exporter.

A small CNN is trained briefly on the offline digits and exported as float32, int8 and uint8 bundles with
golden files (``docs/bundle_format.md``); ``android_demo/core/run_tests.sh`` then builds the core, runs its
JUnit tests (bundle parsing, preprocessing, top-k) and the golden cross-language test on those bundles.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import REPO, skip_or_fail_under_ci

RUN_TESTS = REPO / "android_demo" / "core" / "run_tests.sh"
IMAGE_SIZE = 32
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
GOLDEN_LINE = re.compile(
    r"GOLDEN (?P<name>\S+) input=(?P<dtype>\S+) elements=(?P<elements>\d+) max_abs_diff=(?P<diff>\S+) "
    r"differing=(?P<differing>\d+) output=\S+ top(?P<k>\d+)_match=true"
)


def _require_jvm() -> None:
    """javac and JUnit are there, or run_tests.sh can install them (as root); else skip (fail under CI)."""
    have = shutil.which("javac") and os.path.exists("/usr/share/java/junit4.jar")
    if have or (os.geteuid() == 0 and shutil.which("apt-get") is not None):
        return
    skip_or_fail_under_ci("no JDK/JUnit and no root to install them (android_demo/core/run_tests.sh)")


@pytest.fixture(scope="module")
def golden_bundles(tmp_path_factory):
    """Bundle folders (float32 with logits, int8 with logits, uint8 with the preprocessing and softmax
    inside the model), each with ``golden/``."""
    _require_jvm()
    import keras

    from dynzoo.data.digits import DIGITS_LABELS, digits_arrays
    from dynzoo.export.bundle import write_bundle
    from dynzoo.export.tflite import convert

    keras.utils.set_random_seed(0)
    images, labels = digits_arrays("train", IMAGE_SIZE)
    mean, std = np.asarray(MEAN, "float32"), np.asarray(STD, "float32")
    normalised = (images.astype("float32") / 255.0 - mean) / std

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    logits = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, logits)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(normalised, labels, epochs=8, batch_size=32, verbose=0)  # ~70 % test accuracy: spread-out scores

    raw = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    normalise = keras.layers.Normalization(mean=mean * 255.0, variance=(std * 255.0) ** 2)
    in_model = keras.Model(raw, keras.layers.Softmax()(model(normalise(raw))))

    folder = tmp_path_factory.mktemp("bundles")
    exports = [
        ("float32", convert(model, "float32"), False, "none"),
        ("int8", convert(model, "int8", representative_data=normalised[:32]), False, "none"),
        ("uint8", convert(in_model, "uint8", representative_data=images[:32].astype("float32")), True, "softmax"),
    ]
    bundles = [
        write_bundle(
            folder / f"digits_cnn_{mode}",
            flatbuffer,
            labels=DIGITS_LABELS,
            source_model="digits_cnn",
            mode=mode,
            preprocessing_in_model=in_model_pre,
            mean=MEAN,
            std=STD,
            output_activation=activation,
            golden=True,
        )
        for mode, flatbuffer, in_model_pre, activation in exports
    ]
    # and one written by the command a user runs, `dynzoo export … --bundle --golden`, taken unchanged
    from dynzoo.cli import main as dynzoo_cli

    model.save(folder / "digits_cli.keras")
    assert (
        dynzoo_cli(
            [
                "export",
                str(folder / "digits_cli.keras"),
                "--mode",
                "int8",
                "--calibration-size",
                "16",
                "--bundle",
                "--golden",
                "-o",
                str(folder / "cli"),
            ]
        )
        == 0
    )
    bundles += [p.parent for p in (folder / "cli").glob("*/model_info.json")]
    assert len(bundles) == 4
    return bundles


@pytest.mark.slow
def test_jvm_core_accepts_exported_bundles_and_reproduces_golden_files(golden_bundles):
    result = subprocess.run(
        ["bash", str(RUN_TESTS), *map(str, golden_bundles)], capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"^OK \(\d+ tests\)$", result.stdout, re.M), output

    reports = {m["name"]: m for m in GOLDEN_LINE.finditer(result.stdout)}
    assert sorted(reports) == sorted(b.name for b in golden_bundles), output
    for mode in ("float32", "int8", "uint8"):
        report = reports[f"digits_cnn_{mode}"]
        print(report.group(0))  # the measured differences, shown with `pytest -s`
        assert report["dtype"] == mode
        assert int(report["elements"]) == IMAGE_SIZE * IMAGE_SIZE * 3
        assert float(report["diff"]) <= (1e-6 if mode == "float32" else 1.0), report.group(0)
        golden = json.loads((golden_bundles[0].parent / report["name"] / "golden" / "golden.json").read_text())
        assert int(report["k"]) == len(golden["top_k"]) >= 3
