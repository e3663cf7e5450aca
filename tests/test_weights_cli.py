"""``dynzoo weights list | download | convert | publish | pin``."""

from __future__ import annotations

import hashlib
import json
import shutil

import keras
import numpy as np
import pytest
from weights_http import WeightServer, isolate_weights_env

import dynzoo
import dynzoo.config
from dynzoo.cli import main
from dynzoo.weights import get_weights
from dynzoo.weights.download import dynzoo_home
from dynzoo.weights.manifest import user_manifest_path


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    isolate_weights_env(monkeypatch, tmp_path)


def run(capsys, *argv):
    code = main(["weights", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_official_entry(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| ") and ":" in line.split("|")[1]]
    assert [r.split("|")[1].strip() for r in rows] == [
        "dcd_mobilenetv2_100:imagenet",
        "dcd_resnet50:imagenet",
        "micronet_m0:imagenet",
        "micronet_m1:imagenet",
        "micronet_m2:imagenet",
        "micronet_m3:imagenet",
    ]
    assert "| 46.6 | not pinned | http://www.svcl.ucsd.edu/projects/micronet/assets/micronet-m0.pth | no | MIT |" in out
    assert "| 77.9 | not pinned | manual | no | MIT |" in out
    code, out, _ = run(capsys, "list", "micronet_m3")
    assert code == 0 and "micronet_m3:imagenet" in out and "micronet_m0" not in out


def test_download_then_pin(official_dir, monkeypatch, capsys):
    body = (official_dir / "micronet_m0.pth").read_bytes()
    sha = hashlib.sha256(body).hexdigest()
    with WeightServer() as server:
        server.serve("/micronet-m0.pth", body)
        monkeypatch.setenv("DYNZOO_MIRRORS", server.base)
        code, out, err = run(capsys, "download", "micronet_m0")
        assert code == 2 and "--allow-unpinned" in err and server.hits["/micronet-m0.pth"] == 0
        code, out, _ = run(capsys, "download", "micronet_m0", "--allow-unpinned")
    cached = dynzoo_home() / "downloads" / "micronet-m0.pth"
    assert code == 0 and out.strip() == f"micronet_m0: {cached} sha256={sha}"
    assert cached.read_bytes() == body

    code, out, _ = run(capsys, "pin", "micronet_m0:imagenet", sha.upper())
    assert code == 0 and get_weights("micronet_m0").sha256 == sha
    assert json.loads(user_manifest_path().read_text())["weights"]["micronet_m0"]["imagenet"] == {"sha256": sha}
    monkeypatch.setenv("DYNZOO_STRICT_HASHES", "1")
    monkeypatch.setenv("DYNZOO_OFFLINE", "1")
    code, out, _ = run(capsys, "download", "micronet_m0:imagenet")  # pinned, cached: accepted offline
    assert code == 0 and f"sha256={sha}" in out


def test_errors_are_one_line(monkeypatch, capsys):
    monkeypatch.setenv("DYNZOO_OFFLINE", "1")
    code, _, err = run(capsys, "download", "micronet_m1")
    assert code == 2 and err.startswith("dynzoo weights: error: micronet-m1.pth is not in the cache")
    assert "Traceback" not in err
    code, _, err = run(capsys, "download", "micronet_m9")
    assert code == 2 and "no pretrained weights are listed for 'micronet_m9'" in err
    code, _, err = run(capsys, "pin", "micronet_m0", "abc")
    assert code == 2 and "64 hex digits" in err
    code, _, err = run(capsys, "download", "dcd_resnet50")
    assert code == 2 and "drive.google.com" in err


def test_convert_an_official_checkpoint(official_dir, tmp_path, capsys):
    out_file = tmp_path / "m0.weights.h5"
    code, out, _ = run(
        capsys, "convert", str(official_dir / "micronet_m0.pth"), "--model", "micronet_m0", "--out", str(out_file)
    )
    assert code == 0 and out.startswith(f"{out_file} sha256={hashlib.sha256(out_file.read_bytes()).hexdigest()}")
    data = np.load(official_dir / "micronet_m0_io.npz")
    model = dynzoo.create_model(
        "micronet_m0", weights=str(out_file), include_preprocessing=False, classifier_activation=None
    )
    got = np.asarray(model(data["input_nchw"].transpose(0, 2, 3, 1), training=False))
    np.testing.assert_allclose(got, data["logits"], rtol=0, atol=1e-5 * np.abs(data["logits"]).max())

    code, _, err = run(
        capsys,
        "convert",
        str(official_dir / "micronet_m0.pth"),
        "--model",
        "micronet_m0",
        "--out",
        str(tmp_path / "m0.h5"),
    )
    assert code == 2 and "--out must end with .weights.h5" in err


@pytest.mark.slow
def test_publish_our_own_weights_like_anyone_elses(tmp_path, monkeypatch, capsys):
    kwargs = dict(input_shape=(32, 32, 3), classes=10)
    trained = dynzoo.create_model("micronet_m0", **kwargs)
    rng = np.random.default_rng(0)
    for v in trained.weights:  # stands in for training: any weights that differ from a fresh build
        v.assign(rng.uniform(0.5, 1.5, size=v.shape).astype("float32"))  # positive: BN variances too
    trained.save(tmp_path / "trained.keras")

    published = tmp_path / "published"
    published.mkdir()
    code, out, _ = run(
        capsys,
        "publish",
        str(tmp_path / "trained.keras"),
        "--tag",
        "digits",
        "--out-dir",
        str(published),
        "--url",
        "http://example.invalid/weights",
        "--licence",
        "Apache-2.0",
        "--top1",
        "97.1",
    )
    assert code == 0
    (h5,) = published.glob("*.weights.h5")
    sha = hashlib.sha256(h5.read_bytes()).hexdigest()
    assert h5.name == f"micronet_m0-digits-{sha[:8]}.weights.h5"
    entry = get_weights("micronet_m0", "digits")
    assert (entry.format, entry.sha256, entry.size, entry.num_classes, entry.input_size) == (
        "keras_weights_h5",
        sha,
        h5.stat().st_size,
        10,
        (32, 32, 3),
    )
    assert entry.urls == (f"http://example.invalid/weights/{h5.name}",) and entry.top1 == 97.1

    x = rng.uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    expected = np.asarray(trained(x, training=False))
    assert np.isfinite(expected).all() and np.ptp(expected) > 0
    # here: from the local cache, at once
    loaded = dynzoo.create_model("micronet_m0", weights="digits", **kwargs)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), expected)
    with pytest.raises(ValueError, match="`classes` should be 10"):
        dynzoo.create_model("micronet_m0", weights="digits", input_shape=(32, 32, 3))
    backbone = dynzoo.create_model("micronet_m0", weights="digits", include_top=False, **kwargs)
    features = keras.Model(trained.input, trained.get_layer("features_relu6").output)(x, training=False)
    np.testing.assert_array_equal(np.asarray(backbone(x, training=False)), np.asarray(features))

    # elsewhere: a fresh cache with the published manifest entry downloads it, hash-checked
    manifest = user_manifest_path().read_text()
    monkeypatch.setenv("DYNZOO_HOME", str(tmp_path / "other_machine"))
    (tmp_path / "other_machine").mkdir()
    user_manifest_path().write_text(manifest)
    with WeightServer() as server:
        server.serve(f"/mirror/{h5.name}", h5.read_bytes())
        monkeypatch.setenv("DYNZOO_MIRRORS", server.base + "/mirror")
        monkeypatch.setenv("DYNZOO_STRICT_HASHES", "1")
        downloaded = dynzoo.create_model("micronet_m0", weights="digits", **kwargs)
        assert server.hits[f"/mirror/{h5.name}"] == 1
    np.testing.assert_array_equal(np.asarray(downloaded(x, training=False)), expected)


def test_publish_into_another_manifest(tmp_path, capsys):
    model = dynzoo.create_model("micronet_m0", input_shape=(32, 32, 3), classes=4)
    model.save(tmp_path / "m.keras")
    manifest = tmp_path / "weights.json"
    shutil.copy(dynzoo.config.config_dir() / "weights.json", manifest)
    code, out, _ = run(
        capsys,
        "publish",
        str(tmp_path / "m.keras"),
        "--tag",
        "tiny",
        "--out-dir",
        str(tmp_path),
        "--manifest",
        str(manifest),
    )
    assert code == 0 and "no --url given" in out
    data = json.loads(manifest.read_text())
    assert set(data["weights"]["micronet_m0"]) == {"imagenet", "tiny"}  # merged, nothing lost
    assert data["weights"]["micronet_m0"]["tiny"]["sha256"] in out
    code, _, err = run(capsys, "publish", str(tmp_path / "m.keras"), "--tag", "../x")
    assert code == 2 and "--tag must be a plain name" in err
