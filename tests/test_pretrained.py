"""``weights="imagenet"`` end to end: the official checkpoint served by a local HTTP server under its
official file name, downloaded, converted once, cached and loaded."""

from __future__ import annotations

import hashlib

import keras
import numpy as np
import pytest
from torch_format import malicious_pickle, save_zip_checkpoint
from weights_http import WeightServer, isolate_weights_env

import dynzoo
from dynzoo.weights import (
    DownloadError,
    HashMismatchError,
    UnsafeCheckpointError,
    get_weights,
    list_weights,
    pretrained_file,
)
from dynzoo.weights.download import dynzoo_home
from dynzoo.weights.manifest import update_manifest, user_manifest_path


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    isolate_weights_env(monkeypatch, tmp_path)


@pytest.fixture
def m0_server(official_dir, monkeypatch):
    """The M0 fixture checkpoint served as `micronet-m0.pth`, the server listed in DYNZOO_MIRRORS. Like
    the authors' server it speaks plain http and the file has no pinned hash: the opt-in is given."""
    with WeightServer() as server:
        server.serve("/micronet/micronet-m0.pth", (official_dir / "micronet_m0.pth").read_bytes())
        monkeypatch.setenv("DYNZOO_MIRRORS", server.base + "/micronet")
        monkeypatch.setenv("DYNZOO_ALLOW_UNPINNED", "1")
        yield server


@pytest.fixture(scope="module")
def m0_io(official_dir):
    data = np.load(official_dir / "micronet_m0_io.npz")
    return data["input_nchw"].transpose(0, 2, 3, 1), data["logits"]


def logits_model(**kwargs):
    return dynzoo.create_model("micronet_m0", include_preprocessing=False, classifier_activation=None, **kwargs)


def converted_files():
    folder = dynzoo_home() / "converted"
    return sorted(folder.glob("*.weights.h5")) if folder.exists() else []


def assert_close(got, expected, rel=1e-5):
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=rel * np.abs(expected).max())


@pytest.mark.slow
def test_imagenet_weights_end_to_end(m0_server, m0_io, official_dir, monkeypatch, capsys):
    x, expected = m0_io
    assert_close(logits_model(weights="imagenet")(x, training=False), expected)
    assert m0_server.hits["/micronet/micronet-m0.pth"] == 1
    sha = hashlib.sha256((official_dir / "micronet_m0.pth").read_bytes()).hexdigest()
    assert f"sha256 {sha}" in capsys.readouterr().err  # unpinned upstream: the hash is shown
    converted = dynzoo_home() / "converted" / f"micronet_m0-imagenet-{sha[:16]}-top.weights.h5"
    assert converted_files() == [converted]  # keyed by the source hash

    # later calls: offline, from the converted cache, the official converter not called again; the
    # cache also serves the variant that takes RGB in [0, 255]
    monkeypatch.setenv("DYNZOO_OFFLINE", "1")
    with monkeypatch.context() as patch:
        patch.setattr("dynzoo.models.micronet.load_official_checkpoint", lambda *a, **k: pytest.fail("converted twice"))
        model = dynzoo.create_model("micronet_m0", weights="imagenet", classifier_activation=None)
    rgb = (x * np.array([0.229, 0.224, 0.225]) + np.array([0.485, 0.456, 0.406])) * 255.0
    assert_close(model(rgb.astype("float32"), training=False), expected, rel=1e-4)
    assert m0_server.hits["/micronet/micronet-m0.pth"] == 1

    # a damaged converted file is discarded and rebuilt from the cached checkpoint
    converted.write_bytes(b"not an h5 file")
    assert_close(logits_model(weights="imagenet")(x, training=False), expected)
    assert "discarding the converted cache" in capsys.readouterr().err


def test_include_top_false_loads_the_backbone(m0_server, m0_io):
    x, _ = m0_io
    full = logits_model(weights="imagenet")
    features = keras.Model(full.input, full.get_layer("features_relu6").output)(x, training=False)
    backbone = logits_model(weights="imagenet", include_top=False)
    assert not any(layer.name.startswith(("head_", "logits_")) for layer in backbone.layers)
    assert_close(backbone(x, training=False), np.asarray(features))
    assert [p.name.rsplit("-", 1)[1] for p in converted_files()] == ["notop.weights.h5", "top.weights.h5"]


def test_classes_other_than_1000_need_include_top_false():
    with pytest.raises(ValueError, match="`classes` should be 1000"):
        dynzoo.create_model("micronet_m0", weights="imagenet", classes=10)


def test_unknown_tag_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"no weights tagged 'imagenet21k'.*\['imagenet'\]"):
        dynzoo.create_model("micronet_m0", weights="imagenet21k")


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    sentinel = tmp_path / "pwned"
    path = save_zip_checkpoint({}, tmp_path / "evil.pth", pickle_bytes=malicious_pickle(f"touch {sentinel}"))
    with WeightServer() as server:
        server.serve("/micronet-m0.pth", path.read_bytes())
        monkeypatch.setenv("DYNZOO_MIRRORS", server.base)
        monkeypatch.setenv("DYNZOO_ALLOW_UNPINNED", "1")
        with pytest.raises(UnsafeCheckpointError, match="os.system|posix.system"):
            dynzoo.create_model("micronet_m0", weights="imagenet")
    assert not sentinel.exists()
    assert converted_files() == []


def test_strict_hashes_and_pinning(m0_server, official_dir, monkeypatch):
    monkeypatch.setenv("DYNZOO_STRICT_HASHES", "1")
    with pytest.raises(DownloadError, match="no sha256 is pinned"):
        dynzoo.create_model("micronet_m0", weights="imagenet")
    assert m0_server.hits["/micronet/micronet-m0.pth"] == 0

    wrong = "f" * 64
    update_manifest(user_manifest_path(), "micronet_m0", "imagenet", {"sha256": wrong})
    assert get_weights("micronet_m0").sha256 == wrong
    with pytest.raises(HashMismatchError) as e:
        pretrained_file("micronet_m0", "imagenet")
    sha = hashlib.sha256((official_dir / "micronet_m0.pth").read_bytes()).hexdigest()
    assert wrong in str(e.value) and sha in str(e.value)

    update_manifest(user_manifest_path(), "micronet_m0", "imagenet", {"sha256": sha})
    path = pretrained_file("micronet_m0", "imagenet")
    assert path.read_bytes() == (official_dir / "micronet_m0.pth").read_bytes()


def test_manifest_covers_the_official_weights():
    entries = {e.name: e for e in list_weights()}
    for size, top1 in zip("0123", (46.6, 51.4, 59.4, 62.5), strict=False):
        entry = entries[f"micronet_m{size}:imagenet"]
        assert entry.urls and entry.urls[-1].endswith(f"/micronet-m{size}.pth")
        assert entry.file_name == f"micronet-m{size}.pth"
        assert (entry.format, entry.num_classes, entry.top1) == ("pytorch_official", 1000, top1)
        assert entry.licence.startswith("MIT") and "MicroNet" in entry.citation
        assert entry.preprocessing["mean"] == [0.485, 0.456, 0.406] and entry.preprocessing["center_crop"] == 224
        assert entry.sha256 is None  # not published upstream; never invented
    for name in ("dcd_mobilenetv2_100:imagenet", "dcd_resnet50:imagenet"):
        assert not entries[name].urls and entries[name].manual_download["page"].startswith("https://")


def test_manual_download_entries_explain_what_to_do():
    with pytest.raises(ValueError, match=r"cannot be downloaded automatically.*drive\.google\.com.*\.pth\.tar"):
        pretrained_file("dcd_resnet50", "imagenet")
