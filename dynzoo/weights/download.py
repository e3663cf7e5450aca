"""Verified, cached, atomic downloads (the standard library only, so that it can run anywhere).

``keras.utils.get_file`` writes straight to the cache path (a process killed mid-transfer leaves a
partial file there; a file that fails its hash stays there; its error names only the expected hash)
and has no mirrors, retries or locking, so :func:`fetch` is its equivalent with these guarantees:

- the file is written to a temporary name beside its cache entry and renamed into place only once it
  is complete (the announced length arrived) and its sha256 matched: an interrupted, truncated or
  corrupted transfer never becomes a cache hit;
- every mirror is tried in turn (``$DYNZOO_MIRRORS`` first, then the manifest's URLs), rounds of them
  are retried with exponential backoff on transient errors (connection refused, timeouts, truncation,
  5xx); a 404 or a wrong hash drops that URL;
- two processes fetching the same file wait for each other on a lock file: one downloads, the other
  finds the finished file;
- ``DYNZOO_OFFLINE=1`` never touches the network: the cache or a clear error;
- ``DYNZOO_STRICT_HASHES=1`` refuses any file without a pinned sha256.

Environment: ``DYNZOO_HOME`` (cache root; default ``$KERAS_HOME/dynzoo``, ``KERAS_HOME`` default
``~/.keras``), ``DYNZOO_MIRRORS`` (base URLs, separated by spaces or commas, each tried as
``BASE/FILE_NAME``), ``DYNZOO_OFFLINE``, ``DYNZOO_STRICT_HASHES``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence

CHUNK = 1 << 16


class DownloadError(OSError):
    """A file could not be fetched (every URL failed, offline without a cache hit, unpinned in strict
    mode). The message lists what was tried."""


class HashMismatchError(DownloadError):
    """The downloaded file's sha256 is not the expected one; the file was discarded."""


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def offline() -> bool:
    return _flag("DYNZOO_OFFLINE")


def strict_hashes() -> bool:
    return _flag("DYNZOO_STRICT_HASHES")


def dynzoo_home() -> Path:
    """``$DYNZOO_HOME``, default ``$KERAS_HOME/dynzoo`` (``KERAS_HOME`` default ``~/.keras``)."""
    if os.environ.get("DYNZOO_HOME"):
        return Path(os.environ["DYNZOO_HOME"]).expanduser()
    return Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser() / "dynzoo"


def cache_dir(subdir: str) -> Path:
    path = dynzoo_home() / subdir
    path.mkdir(parents=True, exist_ok=True)
    return path


def mirror_urls(file_name: str) -> list[str]:
    """``$DYNZOO_MIRRORS`` base URLs joined with ``file_name``."""
    bases = re.split(r"[\s,]+", os.environ.get("DYNZOO_MIRRORS", "").strip())
    return [f"{b.rstrip('/')}/{file_name}" for b in bases if b]


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def file_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``TARGET.lock`` (POSIX ``flock``; a no-op where unavailable: the atomic
    rename alone still keeps the cache valid, only the work may be done twice)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(target.with_name(target.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class _Progress:
    """A byte counter on stderr: redrawn in place on a terminal, one line at the end otherwise."""

    def __init__(self, label: str, total: int | None, enabled: bool):
        self.label, self.total, self.enabled = label, total, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.last = 0.0

    def update(self, done: int, final: bool = False) -> None:
        if not self.enabled or not (final or self.tty) or (not final and time.monotonic() - self.last < 0.1):
            return
        self.last = time.monotonic()
        if self.total:
            filled = int(30 * done / self.total)
            bar = f"[{'=' * filled}{'.' * (30 - filled)}] {done / 1e6:.1f}/{self.total / 1e6:.1f} MB"
        else:
            bar = f"{done / 1e6:.1f} MB"
        end = "\n" if final else ""
        print(f"\r{self.label} {bar}", end=end, file=sys.stderr, flush=True)


class _Transient(Exception):
    """Worth retrying: the same URL may work a moment later."""


class _Permanent(Exception):
    """Not worth retrying on this URL."""


class _WrongHash(_Permanent):
    pass


def _download(url: str, out, *, sha256: str | None, size: int | None, timeout: float,
              progress: bool, label: str) -> str:
    """Stream ``url`` into the open file ``out``; return the sha256 of what arrived."""
    request = urllib.request.Request(url, headers={"User-Agent": "dynzoo"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            bar = _Progress(label, total or size, progress)
            digest, done = hashlib.sha256(), 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                bar.update(done)
            bar.update(done, final=True)
    except http.client.IncompleteRead:
        raise _Transient("truncated transfer: the connection closed before the announced length") from None
    except urllib.error.HTTPError as e:
        error = f"HTTP {e.code} {e.reason}"
        raise (_Transient if e.code >= 500 or e.code in (408, 429) else _Permanent)(error) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:  # refused, reset, timeout
        reason = getattr(e, "reason", e)
        raise _Transient(f"{type(e).__name__}: {reason}") from None
    if total is not None and done != total:
        raise _Transient(f"truncated transfer: {done} of {total} bytes")
    if size is not None and done != size:
        raise _Permanent(f"size mismatch: expected {size} bytes, got {done}")
    got = digest.hexdigest()
    if sha256 is not None and got != sha256:
        raise _WrongHash(f"sha256 mismatch: expected {sha256}, got {got}; the file was discarded")
    return got


def _valid_cache_hit(target: Path, sha256: str | None) -> bool:
    return target.is_file() and (sha256 is None or sha256_file(target) == sha256)


def fetch(
    file_name: str,
    urls: Sequence[str],
    *,
    sha256: str | None = None,
    size: int | None = None,
    subdir: str = "downloads",
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Return the cached path of ``file_name``, downloading it from ``$DYNZOO_MIRRORS`` then ``urls``
    if it is not cached (or its cached copy does not match ``sha256``).

    Args:
        file_name: name of the file in the cache (no directories).
        urls: where to download it, in order of preference.
        sha256: expected sha256 (64 hex digits), or None when unknown (the hash of the download is
            printed; ``DYNZOO_STRICT_HASHES=1`` refuses such files).
        size: expected size in bytes, or None.
        subdir: cache sub-directory under :func:`dynzoo_home`.
        retries: rounds over the URLs; a round after a transient failure waits ``backoff``,
            then ``2·backoff``, ``4·backoff`` … seconds.
        timeout: seconds without data before a connection is abandoned.
        progress: print a progress bar and messages on stderr.

    Raises:
        DownloadError: every URL failed (the message lists each failure), offline without a cache
            hit, or an unpinned file in strict mode; :class:`HashMismatchError` where a URL served a
            file with another sha256 (the message names both hashes).
    """
    if not file_name or os.path.basename(file_name) != file_name or file_name in (".", ".."):
        raise ValueError(f"`file_name` must be a plain file name, got {file_name!r}.")
    if sha256 is not None:
        sha256 = sha256.lower()
    if strict_hashes() and sha256 is None:
        raise DownloadError(
            f"{file_name}: no sha256 is pinned and DYNZOO_STRICT_HASHES is set. Pin the hash of a copy "
            "you trust (`dynzoo weights pin NAME:TAG SHA256`) or unset DYNZOO_STRICT_HASHES."
        )
    target = cache_dir(subdir) / file_name
    if _valid_cache_hit(target, sha256):
        return target
    if offline():
        state = "does not match its pinned sha256" if target.exists() else "is not in the cache"
        raise DownloadError(
            f"{file_name} {state} ({target}) and DYNZOO_OFFLINE is set, so nothing is downloaded. "
            "Fetch it on a machine with network access (`dynzoo weights download`) and copy the cache "
            "directory, or unset DYNZOO_OFFLINE."
        )
    candidates = list(dict.fromkeys([*mirror_urls(file_name), *urls]))
    if not candidates:
        raise DownloadError(f"{file_name}: no URL to download it from (set DYNZOO_MIRRORS).")
    with file_lock(target):
        if _valid_cache_hit(target, sha256):  # another process finished it while we waited
            return target
        errors: list[str] = []
        wrong_hash = False
        for attempt in range(max(1, retries)):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            for url in list(candidates):
                if progress:
                    print(f"Downloading {file_name} from {url}", file=sys.stderr)
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{file_name}.", suffix=".part")
                try:
                    with os.fdopen(fd, "wb") as out:
                        got = _download(url, out, sha256=sha256, size=size, timeout=timeout,
                                        progress=progress, label=file_name)
                        out.flush()
                        os.fsync(out.fileno())
                    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
                    os.replace(tmp, target)
                except (_Transient, _Permanent) as e:
                    errors.append(f"{url}: {e}")
                    wrong_hash |= isinstance(e, _WrongHash)
                    if isinstance(e, _Permanent):
                        candidates.remove(url)
                    continue
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                if progress and sha256 is None:
                    print(f"{file_name}: sha256 {got} (no hash is pinned for it: compare it with a "
                          "trusted copy, then pin it)", file=sys.stderr)
                return target
            if not candidates:
                break
    error = HashMismatchError if wrong_hash else DownloadError
    raise error(f"could not download {file_name}:\n  " + "\n  ".join(errors))
