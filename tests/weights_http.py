"""A real HTTP server on 127.0.0.1 for the weight-download tests (test helper).

Each served path can misbehave on purpose: fail its first requests (503 or a truncated body), always
truncate, redirect, or stream slowly. ``hits[path]`` counts the requests that reached each path.
"""

from __future__ import annotations

import collections
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes = b""
    redirect_to: str | None = None
    truncate: bool = False  # announce the full length, send half, close
    fail_first: int = 0  # the first n requests fail …
    failure: str = "503"  # … with a 503 or a "truncate"d body
    chunk_delay: float = 0.0  # seconds between 64 KiB chunks


class WeightServer:
    """``WeightServer()`` serves plain http; ``WeightServer(tls=(CERT, KEY))`` serves https with that
    certificate (see :func:`self_signed_certificate`)."""

    def __init__(self, tls: tuple[str, str] | None = None):
        self.routes: dict[str, Route] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                server.hits[self.path] += 1
                route = server.routes.get(self.path)
                if route is None:
                    return self._reply(404, b"not found")
                if route.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", route.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                failing = server.hits[self.path] <= route.fail_first
                if failing and route.failure == "503":
                    return self._reply(503, b"busy")
                body = route.body
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if route.truncate or failing:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                for start in range(0, len(body), 1 << 16):
                    self.wfile.write(body[start : start + (1 << 16)])
                    if route.chunk_delay:
                        self.wfile.flush()
                        time.sleep(route.chunk_delay)

            def _reply(self, status: int, body: bytes):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "https" if tls else "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}"

    def serve(self, path: str, body: bytes = b"", **behaviour) -> str:
        """Serve ``body`` at ``path`` (with the given :class:`Route` behaviour); return its URL."""
        self.routes[path] = Route(body=body, **behaviour)
        return self.base + path

    def __enter__(self) -> WeightServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def self_signed_certificate(folder) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, made by the openssl command (skips the test without it).
    Clients trust it through ``SSL_CERT_FILE``."""
    import pytest

    if not shutil.which("openssl"):
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def dead_base_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused): a mirror that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def isolate_weights_env(monkeypatch, tmp_path) -> None:
    """A private DYNZOO_HOME and none of the user's download settings."""
    monkeypatch.setenv("DYNZOO_HOME", str(tmp_path / "dynzoo_home"))
    for name in ("DYNZOO_MIRRORS", "DYNZOO_OFFLINE", "DYNZOO_STRICT_HASHES", "DYNZOO_ALLOW_UNPINNED"):
        monkeypatch.delenv(name, raising=False)
