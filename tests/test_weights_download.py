"""Verified, cached downloads against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest
from weights_http import (
    WeightServer,
    dead_base_url,
    isolate_weights_env,
    self_signed_certificate,
)

from dynzoo.weights import download
from dynzoo.weights.download import DownloadError, HashMismatchError, fetch

PAYLOAD = os.urandom(300_000)  # several 64 KiB chunks
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    isolate_weights_env(monkeypatch, tmp_path)


@pytest.fixture
def server():
    with WeightServer() as s:
        yield s


def cache_files():
    folder = download.dynzoo_home() / "downloads"
    return (
        sorted(p.name for p in folder.iterdir() if not p.name.endswith((".lock", ".first-seen.json")))
        if folder.exists()
        else []
    )


def test_good_download_is_cached_and_verified(server, capsys):
    url = server.serve("/w.pth", PAYLOAD)
    path = fetch("w.pth", [url], sha256=SHA, size=len(PAYLOAD))
    assert path.read_bytes() == PAYLOAD
    assert path.parent == download.dynzoo_home() / "downloads"
    assert cache_files() == ["w.pth"]
    assert fetch("w.pth", [url], sha256=SHA) == path  # cache hit: no second request
    assert server.hits["/w.pth"] == 1
    assert "Downloading w.pth" in capsys.readouterr().err


def test_unpinned_plain_http_is_not_downloaded_without_the_opt_in(server, monkeypatch):
    url = server.serve("/w.pth", PAYLOAD)
    with pytest.raises(DownloadError, match="plain http.*allow_unpinned=True.*--allow-unpinned"):
        fetch("w.pth", [url])
    assert server.hits["/w.pth"] == 0 and cache_files() == []
    monkeypatch.setenv("DYNZOO_ALLOW_UNPINNED", "1")
    assert fetch("w.pth", [url]).read_bytes() == PAYLOAD


def test_first_download_is_recorded_and_a_changed_file_is_refused(server, capsys):
    url = server.serve("/w.pth", PAYLOAD)
    path = fetch("w.pth", [url], allow_unpinned=True)
    assert f"sha256 {SHA}" in capsys.readouterr().err  # shown, to compare with a trusted copy
    record = json.loads(download.first_seen_path(path).read_text())
    assert record["sha256"] == SHA and record["url"] == url

    # the record acts as a pin: no opt-in needed any more, and the cache is verified against it
    assert fetch("w.pth", [url]) == path and server.hits["/w.pth"] == 1
    swapped = os.urandom(1000)
    server.serve("/w.pth", swapped)
    path.write_bytes(swapped)  # a tampered cache, and the server now serving another file
    with pytest.raises(HashMismatchError) as e:
        fetch("w.pth", [url], allow_unpinned=True, backoff=0)
    message = str(e.value)
    assert SHA in message and hashlib.sha256(swapped).hexdigest() in message
    assert "recorded at its first download" in message and url in message
    server.serve("/w.pth", PAYLOAD)  # the original file again
    assert fetch("w.pth", [url]).read_bytes() == PAYLOAD


def test_https_needs_no_opt_in_but_a_redirect_to_http_is_refused(server, tmp_path, monkeypatch):
    cert, key = self_signed_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    with WeightServer(tls=(cert, key)) as tls_server:
        url = tls_server.serve("/w.pth", PAYLOAD)
        assert url.startswith("https://") and fetch("w.pth", [url]).read_bytes() == PAYLOAD
        server.serve("/plain/v.pth", PAYLOAD)
        tls_server.serve("/v.pth", redirect_to=server.base + "/plain/v.pth")
        with pytest.raises(DownloadError, match="redirected to plain http"):
            fetch("v.pth", [tls_server.base + "/v.pth"], backoff=0)
        assert server.hits["/plain/v.pth"] == 1 and "v.pth" not in cache_files()
        # plain-http mirrors are skipped, https ones tried, when nothing is pinned
        monkeypatch.setenv("DYNZOO_MIRRORS", server.base + "/plain")
        tls_server.serve("/u.pth", PAYLOAD)
        assert fetch("u.pth", [tls_server.base + "/u.pth"]).read_bytes() == PAYLOAD
        assert server.hits["/plain/u.pth"] == 0


def test_wrong_hash_is_not_cached_and_names_both_hashes(server):
    wrong = "0" * 64
    with pytest.raises(HashMismatchError) as e:
        fetch("w.pth", [server.serve("/w.pth", PAYLOAD)], sha256=wrong, backoff=0)
    assert wrong in str(e.value) and SHA in str(e.value)
    assert cache_files() == []  # neither the file nor a partial one
    assert server.hits["/w.pth"] == 1  # a wrong hash is not retried on the same URL


def test_truncated_transfer_is_retried_and_never_cached(server):
    url = server.serve("/w.pth", PAYLOAD, truncate=True)
    with pytest.raises(DownloadError, match="truncated"):
        fetch("w.pth", [url], retries=3, backoff=0.01, allow_unpinned=True)
    assert server.hits["/w.pth"] == 3
    assert cache_files() == []


def test_truncated_then_complete(server):
    url = server.serve("/w.pth", PAYLOAD, fail_first=1, failure="truncate")
    assert fetch("w.pth", [url], sha256=SHA, backoff=0.01).read_bytes() == PAYLOAD
    assert server.hits["/w.pth"] == 2


def test_server_error_is_retried_with_backoff(server):
    url = server.serve("/w.pth", PAYLOAD, fail_first=2, failure="503")
    start = time.monotonic()
    assert fetch("w.pth", [url], sha256=SHA, retries=3, backoff=0.2).read_bytes() == PAYLOAD
    assert server.hits["/w.pth"] == 3
    assert time.monotonic() - start >= 0.2 + 0.4  # backoff doubles: 0.2 s, then 0.4 s


def test_404_fails_at_once_with_the_url(server):
    with pytest.raises(DownloadError, match="HTTP 404") as e:
        fetch("w.pth", [server.base + "/missing.pth"], retries=3, backoff=5, allow_unpinned=True)
    assert server.base + "/missing.pth" in str(e.value)
    assert server.hits["/missing.pth"] == 1
    assert cache_files() == []


def test_first_mirror_down_second_works(server, monkeypatch):
    monkeypatch.setenv("DYNZOO_MIRRORS", f"{dead_base_url()}/weights, {server.base}/mirror")
    server.serve("/mirror/w.pth", PAYLOAD)
    path = fetch("w.pth", [server.base + "/official/w.pth"], sha256=SHA, backoff=0)
    assert path.read_bytes() == PAYLOAD
    assert server.hits == {"/mirror/w.pth": 1}  # the mirrors come before the manifest's URLs


def test_all_mirrors_down_lists_every_failure(monkeypatch):
    dead = dead_base_url()
    with pytest.raises(DownloadError) as e:
        fetch("w.pth", [f"{dead}/a/w.pth", f"{dead}/b/w.pth"], retries=2, backoff=0, allow_unpinned=True)
    assert str(e.value).count("/a/w.pth") == 2 and str(e.value).count("/b/w.pth") == 2


def test_redirect_is_followed(server):
    target = server.serve("/files/w.pth", PAYLOAD)
    server.serve("/w.pth", redirect_to=target)
    assert fetch("w.pth", [server.base + "/w.pth"], sha256=SHA).read_bytes() == PAYLOAD
    assert server.hits == {"/w.pth": 1, "/files/w.pth": 1}


def test_corrupted_cache_entry_is_downloaded_again(server):
    url = server.serve("/w.pth", PAYLOAD)
    path = fetch("w.pth", [url], sha256=SHA)
    path.write_bytes(PAYLOAD[:1000])
    assert fetch("w.pth", [url], sha256=SHA).read_bytes() == PAYLOAD
    assert server.hits["/w.pth"] == 2


def test_two_processes_download_the_same_file_once(server, tmp_path):
    # slow enough (5 chunks x 0.3 s) that the second process starts while the first is downloading
    url = server.serve("/w.pth", PAYLOAD, chunk_delay=0.3)
    script = (
        "import importlib.util, json, sys\n"
        "spec = importlib.util.spec_from_file_location('download', sys.argv[1])\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(json.dumps(str(m.fetch('w.pth', [sys.argv[2]], sha256=sys.argv[3], progress=False))))\n"
    )
    # the module is loaded on its own (standard library only), so each process starts in milliseconds
    command = [sys.executable, "-c", script, download.__file__, url, SHA]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    paths = {json.loads(out) for out, _ in results}
    assert len(paths) == 1
    assert open(paths.pop(), "rb").read() == PAYLOAD
    assert server.hits["/w.pth"] == 1  # the second process waited and found the finished file
    assert cache_files() == ["w.pth"]  # no partial files left behind


def test_offline_uses_the_cache(server, monkeypatch):
    url = server.serve("/w.pth", PAYLOAD)
    path = fetch("w.pth", [url], sha256=SHA)
    monkeypatch.setenv("DYNZOO_OFFLINE", "1")
    assert fetch("w.pth", [url], sha256=SHA) == path
    assert server.hits["/w.pth"] == 1


def test_offline_without_cache_fails_clearly(server, monkeypatch):
    monkeypatch.setenv("DYNZOO_OFFLINE", "1")
    with pytest.raises(DownloadError, match="not in the cache.*DYNZOO_OFFLINE"):
        fetch("w.pth", [server.serve("/w.pth", PAYLOAD)], sha256=SHA)
    assert server.hits["/w.pth"] == 0


def test_strict_hashes_refuse_unpinned_files(server, monkeypatch):
    url = server.serve("/w.pth", PAYLOAD)
    monkeypatch.setenv("DYNZOO_STRICT_HASHES", "1")
    with pytest.raises(DownloadError, match="no sha256 is pinned"):
        fetch("w.pth", [url])
    assert server.hits["/w.pth"] == 0
    assert fetch("w.pth", [url], sha256=SHA).read_bytes() == PAYLOAD


def test_cache_location_follows_keras_home(monkeypatch, tmp_path):
    monkeypatch.delenv("DYNZOO_HOME")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    assert download.dynzoo_home() == tmp_path / "keras" / "dynzoo"


@pytest.mark.parametrize("name", ["", "../w.pth", "a/w.pth", ".."])
def test_file_name_must_be_plain(name):
    with pytest.raises(ValueError, match="file_name"):
        fetch(name, ["http://127.0.0.1:1/x"])
