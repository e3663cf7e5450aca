"""Run dynzoo models on the Keras backend this process was started with (``KERAS_BACKEND``); print one
JSON line per check. ``tests/test_backends.py`` starts it once per backend, since Keras picks its
backend once per process.

    KERAS_BACKEND=jax python tests/backend_check.py FIXTURES_DIR REFERENCE_DIR OUT_DIR MODEL[:FIXTURE] ...

For each model: build it (64×64 input and 10 classes; with ``:FIXTURE``, the official checkpoint, whose
logits on the fixture's images must match the authors' PyTorch outputs in ``../shared/fixtures/official``)
and run it forward. On TensorFlow, save its weights and logits to REFERENCE_DIR; on another backend,
load TensorFlow's weights and compare the logits. Then train one SGD step and round-trip the model
through a ``.keras`` file.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import keras
import numpy as np
from official_parity import official_io, parity_error

import dynzoo


def check(name: str, fixture: str | None, fixtures: Path, reference: Path, out: Path) -> dict:
    started = time.time()
    result: dict = {"model": name, "backend": keras.backend.backend()}
    rng = np.random.default_rng(0)
    if fixture:  # the official checkpoint, on the fixture's images (calibrated, so the logits are sane)
        model = dynzoo.create_model(
            name, weights=str(fixtures / f"{fixture}.pth"), include_preprocessing=False, classifier_activation=None
        )
        x, expected_logits = official_io(fixtures, fixture)
        result["parity_error"] = float(
            parity_error(keras.ops.convert_to_numpy(model(x, training=False)), expected_logits).max()
        )  # in tolerances (1e-4 relative)
        x = x[:2]
    else:
        model = dynzoo.create_model(name, input_shape=(64, 64, 3), classes=10, classifier_activation=None)
        x = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    if len(model.inputs) > 1:  # DDN: the image and its domain embedding
        x = [x, rng.normal(size=(2, model.inputs[1].shape[-1])).astype("float32")]
    if keras.backend.backend() == "tensorflow":
        model.save_weights(reference / f"{name}.weights.h5")
        np.save(reference / f"{name}.npy", keras.ops.convert_to_numpy(model(x, training=False)))
    else:
        model.load_weights(reference / f"{name}.weights.h5")
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    result["forward_finite"] = bool(np.isfinite(logits).all())
    expected = np.load(reference / f"{name}.npy")
    result["tensorflow_error"] = float(np.abs(logits - expected).max() / np.abs(expected).max())

    model.compile(
        optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    loss = float(np.ravel(model.train_on_batch(x, np.array([1, 2])))[0])
    moved = sum(
        not np.array_equal(b, keras.ops.convert_to_numpy(w))
        for b, w in zip(before, model.trainable_weights, strict=False)
    )
    result["train_loss"], result["weights_moved"] = loss, moved

    path = out / f"{name}.keras"
    model.save(path)
    loaded = dynzoo.load_model(path)
    result["keras_round_trip"] = bool(
        np.array_equal(
            keras.ops.convert_to_numpy(loaded(x, training=False)), keras.ops.convert_to_numpy(model(x, training=False))
        )
    )
    result["seconds"] = round(time.time() - started, 1)
    return result


def main() -> None:
    fixtures, reference, out = map(Path, sys.argv[1:4])
    for spec in sys.argv[4:]:
        name, _, fixture = spec.partition(":")
        try:
            result = check(name, fixture or None, fixtures, reference, out)
        except Exception as e:  # reported, not raised: the other models still run
            result = {"model": name, "backend": keras.backend.backend(), "error": f"{type(e).__name__}: {e}"[:2000]}
        print(json.dumps(result), flush=True)
        keras.backend.clear_session()


if __name__ == "__main__":
    main()
