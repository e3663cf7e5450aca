"""``dynzoo quickstart`` end to end in a fresh process (offline): ≥ 95 % top-1 on the digits test split,
float32 and int8 bundles that LiteRT runs and that agree with Keras, ``dynzoo eval`` on its outputs, and
its trained network's int16x8 export. Its training run is the suite's proof that MicroNet-M0 learns
through ``dynzoo.train`` (the run folder's files and falling loss are checked here)."""

from __future__ import annotations

import csv
import json
import re

import keras
import pytest

from dynzoo.cli import main as dynzoo_main
from dynzoo.quickstart import EPOCHS, INPUT_SIZE
from dynzoo.train.callbacks import CHECKPOINT_FILE


def _table_rows(stdout: str) -> dict[str, list[str]]:
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] in ("Keras (float32)", "TFLite float32", "TFLite int8"):
            rows[cells[0]] = cells[1:]
    return rows


def _percent(cell: str) -> float:
    return float(cell.rstrip("%")) / 100


# What TensorFlow, absl and LiteRT write from C++: "I0000 00:00:…", "W1202 12:00:…", absl's first-line
# notice, the delegate's and the calibrator's lines.
NATIVE_LOG_LINE = re.compile(r"^(?:[IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl|"
                             r"INFO: Created TensorFlow Lite|fully_quantize: )", re.MULTILINE)


@pytest.mark.slow
def test_quickstart_trains_exports_and_compares(quickstart_run, capsys):
    done, out, run_dir = quickstart_run
    stdout = done.stdout.decode()
    output = stdout + done.stderr.decode()
    assert not NATIVE_LOG_LINE.search(output), NATIVE_LOG_LINE.findall(output)  # quiet by default
    rows = _table_rows(stdout)
    assert set(rows) == {"Keras (float32)", "TFLite float32", "TFLite int8"}, stdout[-2000:]
    keras_top1 = _percent(rows["Keras (float32)"][0])
    # The quickstart trains with deterministic ops: measured 97.56 % float and int8, with 99.3 % agreement.
    assert keras_top1 >= 0.95  # the README's promise
    # float32 TFLite is the same network: same decisions, logits equal to float rounding.
    assert _percent(rows["TFLite float32"][1]) == 1.0 and float(rows["TFLite float32"][2]) < 1e-3
    # int8 (dynamic operators included) keeps the decisions on nearly every test image.
    assert _percent(rows["TFLite int8"][1]) >= 0.99 and _percent(rows["TFLite int8"][0]) >= 0.95
    assert re.search(r"quickstart finished in \d+ s", stdout)

    for mode in ("float32", "int8"):
        bundle = out / f"micronet_m0_digits_{mode}"
        info = json.loads((bundle / "model_info.json").read_text())
        assert info["mode"] == mode and info["source_model"] == "micronet_m0"
        assert info["input"]["height"] == info["input"]["width"] == 32
        assert (bundle / "labels.txt").read_text().splitlines() == [str(d) for d in range(10)]
        assert (bundle / "golden" / "golden.json").exists()

    # the training run's folder, as `dynzoo train` leaves it; the loss fell
    for name in ("model.keras", "summary.json", "log.csv", CHECKPOINT_FILE, "tensorboard"):
        assert (run_dir / name).exists(), name
    with open(run_dir / "log.csv", newline="") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == EPOCHS and losses[-1] < losses[0] / 2, losses

    # `dynzoo eval` reproduces the quickstart's figures from the files it left behind.
    capsys.readouterr()
    assert dynzoo_main(["eval", "--tflite", str(out / "micronet_m0_digits_float32"), "--dataset", "digits"]) == 0
    assert f"| top-1    | {rows['TFLite float32'][0]} |" in capsys.readouterr().out
    assert dynzoo_main(["eval", "--model", str(run_dir / "model.keras"), "--dataset", "digits"]) == 0
    assert f"| top-1    | {rows['Keras (float32)'][0]} |" in capsys.readouterr().out


@pytest.mark.slow
def test_the_trained_micronet_keeps_its_accuracy_in_int16x8(quickstart_run):
    """The quickstart's MicroNet-M0 (trained on the 32×32 digits) exported fully integer: top-1 within a
    point of float and 99 % top-1 agreement with Keras on the digits test split."""
    from dynzoo.data import digits_arrays
    from dynzoo.export import convert
    from dynzoo.export.cli import full_range_first
    from dynzoo.export.tflite import float_ops
    from dynzoo.export.verify import parity_report

    model = keras.saving.load_model(quickstart_run[2] / "model.keras", compile=False)
    x_train, _ = digits_arrays("train", INPUT_SIZE)
    x_test, y_test = digits_arrays("test", INPUT_SIZE)
    flatbuffer = convert(model, "int16x8", full_range_first(x_train[:64].astype("float32")))
    assert float_ops(flatbuffer) == []  # fully integer inside (float only at the I/O edges)
    report = parity_report(model, flatbuffer, x_test.astype("float32"), y_test)
    assert report["keras_accuracy"] > 0.85, report  # the network really learned
    assert abs(report["tflite_accuracy"] - report["keras_accuracy"]) <= 0.01, report
    assert report["top1_agreement"] >= 0.99, report
