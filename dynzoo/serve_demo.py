"""``dynzoo serve-demo``: the web demo page (``web_demo/``) and a folder of bundles, served from 127.0.0.1.

The page is built by ``npm --prefix web_demo ci && npm --prefix web_demo run build`` into
``dynzoo/web_demo_site/`` (LiteRT.js's WebAssembly runtime included), which ``pip install .`` then ships
inside the package. Every response carries the cross-origin isolation headers (COOP/COEP) that LiteRT.js's
threaded build needs, and nothing is cached, so a re-exported bundle is picked up on reload.

Routes: ``/`` the page, ``/bundles/NAME/FILE`` the bundle files, ``/bundles/index.json`` the bundle list
(``{"bundles": [NAME, ...]}``: the folders that hold a ``model_info.json``).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_BUNDLES = "bundles"
SITE = Path(__file__).with_name("web_demo_site")
BUILD_COMMAND = "npm --prefix web_demo ci && npm --prefix web_demo run build"
BUNDLE_ROUTE = "/bundles"
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def served_bundles(bundles: Path) -> list[str]:
    """Names of the bundle folders directly under ``bundles`` (hidden staging folders excluded)."""
    if not bundles.is_dir():
        return []
    return sorted(p.name for p in bundles.iterdir() if not p.name.startswith(".") and (p / "model_info.json").is_file())


def check_site(site: Path) -> None:
    """Raise ``ValueError`` with the build command unless ``site`` holds a built page."""
    missing = [name for name in ("index.html", "wasm/litert_wasm_internal.wasm") if not (site / name).is_file()]
    if missing:
        raise ValueError(
            f"the web demo page is not built ({os.fspath(site)} has no {', '.join(missing)}). In the dynzoo "
            f"repository run `{BUILD_COMMAND}`, then `pip install .` again, or pass --site with the built folder."
        )


class DemoRequestHandler(SimpleHTTPRequestHandler):
    """Static files from two roots (the page and the bundles), no directory listings, isolation headers."""

    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".js": "text/javascript",
        ".json": "application/json",
        ".tflite": "application/octet-stream",
        ".bin": "application/octet-stream",
    }

    def __init__(self, *args, site: Path, bundles: Path, **kwargs):
        self.site, self.bundles = site, bundles
        super().__init__(*args, directory=os.fspath(site), **kwargs)

    def end_headers(self) -> None:
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802 (the base class's name)
        if unquote(urlsplit(self.path).path) == f"{BUNDLE_ROUTE}/index.json":
            body = json.dumps({"bundles": served_bundles(self.bundles)}).encode()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def translate_path(self, path: str) -> str:
        route = unquote(urlsplit(path).path)
        if route == BUNDLE_ROUTE or route.startswith(BUNDLE_ROUTE + "/"):
            self.directory = os.fspath(self.bundles)
            path = path[len(BUNDLE_ROUTE) :] or "/"
        else:
            self.directory = os.fspath(self.site)
        return super().translate_path(path)  # drops "..", so nothing outside the two roots is reachable

    def list_directory(self, path):
        self.send_error(HTTPStatus.NOT_FOUND, "no directory listings")
        return None

    def log_message(self, format: str, *args) -> None:
        if self.server.log_requests:
            super().log_message(format, *args)


def make_server(
    bundles: Path, port: int = DEFAULT_PORT, site: Path = SITE, log_requests: bool = False
) -> ThreadingHTTPServer:
    """The demo server bound to 127.0.0.1:``port`` (0: a free port), not yet serving."""
    check_site(site)
    handler = partial(DemoRequestHandler, site=Path(site), bundles=Path(bundles))
    try:
        server = ThreadingHTTPServer((HOST, port), handler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ValueError(
                f"port {port} on {HOST} is in use: pass --port with another one (0 picks a free port)."
            ) from None
        raise
    server.log_requests = log_requests
    return server


def _serve_demo(args: argparse.Namespace) -> int:
    bundles = Path(args.bundles or DEFAULT_BUNDLES)
    if args.bundles is not None and not bundles.is_dir():  # only a folder the user named must exist
        raise ValueError(f"--bundles: {os.fspath(bundles)!r} is not a folder.")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {args.port}.")
    server = make_server(bundles, args.port, Path(args.site), args.log_requests)
    names = served_bundles(bundles)
    where = (
        f"{len(names)} bundle{'s' if len(names) != 1 else ''} from {os.fspath(bundles.resolve())}"
        if names
        else f"no bundles in {os.fspath(bundles.resolve())} (drop one onto the page)"
    )
    print(f"dynzoo serve-demo: http://{HOST}:{server.server_address[1]}/ serving {where}; Ctrl-C stops.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "serve-demo",
        description="Serve the web demo page (LiteRT.js in the browser) and the bundles of a folder from "
        f"127.0.0.1, and print the URL. Build the page once first, in the repository: `{BUILD_COMMAND}`, then "
        "`pip install .`.",
    )
    p.add_argument(
        "--bundles",
        metavar="DIR",
        help=f"folder of bundle folders (default ./{DEFAULT_BUNDLES}, where `dynzoo quickstart` writes "
        "them outside the repository)",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument(
        "--site", default=os.fspath(SITE), metavar="DIR", help="the built page (default: the one installed with dynzoo)"
    )
    p.add_argument("--log-requests", action="store_true", help="print one line per request")
    p.set_defaults(func=_serve_demo)
