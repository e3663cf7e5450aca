"""``dynzoo serve-demo`` without a browser: what it serves, from where, with which headers, and its errors.
The page itself runs in headless Chromium in test_quickstart.py."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

import pytest

from dynzoo.cli import main as dynzoo_main
from dynzoo.serve_demo import make_server


@pytest.fixture
def site(tmp_path):
    """A stand-in for the built page: the two files the server checks for."""
    site = tmp_path / "site"
    (site / "wasm").mkdir(parents=True)
    (site / "index.html").write_text("<!doctype html><title>demo</title>")
    (site / "wasm" / "litert_wasm_internal.wasm").write_bytes(b"\0asm\1\0\0\0")
    return site


@pytest.fixture
def served(site, tmp_path):
    """The server on a free port over a bundles folder with two bundles, a folder without model_info.json
    and a hidden staging folder; yields (base URL, bundles folder)."""
    bundles = tmp_path / "bundles"
    for name in ("m0_float32", "m0_int8", ".m0_int8.staging-x"):
        (bundles / name).mkdir(parents=True)
        (bundles / name / "model_info.json").write_text("{}")
    (bundles / "notes").mkdir()
    (tmp_path / "secret.txt").write_text("outside the roots")
    server = make_server(bundles, port=0, site=site)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", bundles
    server.shutdown()
    server.server_close()


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers, response.read()  # headers: case-insensitive
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_serves_the_page_the_bundles_and_their_list_with_isolation_headers(served):
    url, _ = served
    status, headers, body = _get(f"{url}/")
    assert status == 200 and b"<title>demo</title>" in body
    # the threaded LiteRT.js build needs cross-origin isolation; a re-exported bundle must not be cached
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert headers["Cache-Control"] == "no-store"
    status, headers, _ = _get(f"{url}/wasm/litert_wasm_internal.wasm")
    assert status == 200 and headers["Content-Type"] == "application/wasm"  # streaming compilation needs it
    status, _, body = _get(f"{url}/bundles/index.json")
    assert status == 200 and json.loads(body) == {"bundles": ["m0_float32", "m0_int8"]}
    status, _, body = _get(f"{url}/bundles/m0_int8/model_info.json")
    assert status == 200 and body == b"{}"


@pytest.mark.parametrize(
    "path",
    [
        "/bundles/",
        "/wasm/",
        "/bundles/../secret.txt",
        "/bundles/%2e%2e/secret.txt",
        "/../secret.txt",
        "/bundles/m0_int8/missing.json",
    ],
)
def test_no_listings_and_nothing_outside_the_two_folders(served, path):
    url, _ = served
    request = f"{url}{path}"
    with socket.create_connection(
        ("127.0.0.1", int(url.rsplit(":", 1)[1]))
    ) as connection:  # the raw path, unnormalised
        connection.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        reply = b"".join(iter(lambda: connection.recv(65536), b""))
    assert reply.startswith(b"HTTP/1.0 404"), (request, reply[:200])
    assert b"outside the roots" not in reply


def test_a_page_that_was_not_built_is_named_with_the_build_command(tmp_path, capsys):
    assert dynzoo_main(["serve-demo", "--site", str(tmp_path), "--port", "0"]) == 2
    error = capsys.readouterr().err
    assert "the web demo page is not built" in error and "npm --prefix web_demo run build" in error


def test_bad_arguments_are_one_line_errors(site, tmp_path, capsys):
    assert dynzoo_main(["serve-demo", "--site", str(site), "--bundles", str(tmp_path / "nowhere")]) == 2
    assert "--bundles: " in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert dynzoo_main(["serve-demo", "--site", str(site), "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err
