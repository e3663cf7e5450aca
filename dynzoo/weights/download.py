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

Files without a pinned sha256 are trusted on first use, as SSH trusts a host key:

- over plain http, where anyone on the network path could swap the file, such a file is downloaded only
  with an explicit opt-in (``allow_unpinned=True``, ``dynzoo weights download --allow-unpinned`` or
  ``DYNZOO_ALLOW_UNPINNED=1``); https sources need none, and an https URL that redirects to http counts
  as http;
- the sha256 of its first download is recorded beside the cached file (``FILE.first-seen.json``), and from
  then on it acts as a pin: a different file, from any URL or in the cache, is refused.

Environment: ``DYNZOO_HOME`` (cache root; default ``$KERAS_HOME/dynzoo``, ``KERAS_HOME`` default
``~/.keras``), ``DYNZOO_MIRRORS`` (base URLs, separated by spaces or commas, each tried as
``BASE/FILE_NAME``), ``DYNZOO_OFFLINE``, ``DYNZOO_STRICT_HASHES``, ``DYNZOO_ALLOW_UNPINNED``.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import http.client
import json
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

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


def allow_unpinned_by_environment() -> bool:
    return _flag("DYNZOO_ALLOW_UNPINNED")


def _is_https(url: str) -> bool:
    return url.lower().startswith("https://")


def first_seen_path(target: Path) -> Path:
    """Where the sha256 of an unpinned file's first download is recorded."""
    return target.with_name(target.name + ".first-seen.json")


def first_seen(target: Path) -> dict | None:
    """``{"sha256", "url", "date"}`` recorded at the first download of the unpinned ``target``, or None.
    An unreadable record is an error, not a reason to trust the next file."""
    path = first_seen_path(target)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        if not re.fullmatch(r"[0-9a-f]{64}", record["sha256"]):
            raise ValueError("not a sha256")
        return record
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DownloadError(
            f"the first-download record {path} is unreadable ({e}); delete it only if "
            "you trust the file that will be downloaded next."
        ) from None


def _record_first_seen(target: Path, sha256: str, url: str) -> None:
    record = {"sha256": sha256, "url": url, "date": datetime.date.today().isoformat()}
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.chmod(tmp, 0o644)
    os.replace(tmp, first_seen_path(target))


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


def _download(
    url: str,
    out,
    *,
    sha256: str | None,
    size: int | None,
    timeout: float,
    progress: bool,
    label: str,
    require_https: bool,
) -> str:
    """Stream ``url`` into the open file ``out``; return the sha256 of what arrived."""
    request = urllib.request.Request(url, headers={"User-Agent": "dynzoo"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if require_https and not _is_https(response.geturl()):
                raise _Permanent(f"redirected to plain http ({response.geturl()}), and no sha256 is pinned")
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
    except _Permanent:
        raise
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
    allow_unpinned: bool = False,
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
        allow_unpinned: download a file that has neither a pinned sha256 nor a recorded first
            download over plain http too (also ``DYNZOO_ALLOW_UNPINNED=1``). Anyone on the network
            path could then swap it; its hash is recorded, so it cannot change afterwards.

    Raises:
        DownloadError: every URL failed (the message lists each failure), offline without a cache
            hit, an unpinned file in strict mode, or an unpinned file over plain http without
            ``allow_unpinned``; :class:`HashMismatchError` where a URL served a file with another
            sha256 than the pinned or first-seen one (the message names both hashes).
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
    allow_unpinned = allow_unpinned or allow_unpinned_by_environment()
    record = first_seen(target) if sha256 is None else None
    expected = sha256 or (record and record["sha256"])
    if expected and _valid_cache_hit(target, expected):  # no lock needed: a read-only cache works
        return target
    with file_lock(target):
        record = first_seen(target) if sha256 is None else None  # another process may have recorded it
        expected = sha256 or (record and record["sha256"])
        if target.is_file() and expected is None:  # cached before first downloads were recorded
            _record_first_seen(target, sha256_file(target), "the cache")
            return target
        if _valid_cache_hit(target, expected):
            return target
        if offline():
            state = "does not match its expected sha256" if target.exists() else "is not in the cache"
            raise DownloadError(
                f"{file_name} {state} ({target}) and DYNZOO_OFFLINE is set, so nothing is downloaded. "
                "Fetch it on a machine with network access (`dynzoo weights download`) and copy the cache "
                "directory, or unset DYNZOO_OFFLINE."
            )
        candidates = list(dict.fromkeys([*mirror_urls(file_name), *urls]))
        if not candidates:
            raise DownloadError(f"{file_name}: no URL to download it from (set DYNZOO_MIRRORS).")
        require_https = expected is None and not allow_unpinned
        if require_https and not any(map(_is_https, candidates)):
            raise DownloadError(
                f"{file_name}: no sha256 is pinned and it is served over plain http ({candidates[0]}), so "
                "anyone on the network path could swap it. Pin the hash of a copy you trust (`dynzoo "
                "weights pin NAME:TAG SHA256`), or accept the risk for its first download with "
                "`allow_unpinned=True`, `dynzoo weights download NAME --allow-unpinned` or "
                "DYNZOO_ALLOW_UNPINNED=1; its sha256 is then recorded and a changed file is refused."
            )
        if require_https:
            candidates = [u for u in candidates if _is_https(u)]
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
                        got = _download(
                            url,
                            out,
                            sha256=expected,
                            size=size,
                            timeout=timeout,
                            progress=progress,
                            label=file_name,
                            require_https=require_https,
                        )
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
                if expected is None:
                    _record_first_seen(target, got, url)
                    if progress:
                        print(
                            f"{file_name}: sha256 {got} (no hash is pinned for it: it is recorded, so a "
                            "changed file will be refused; compare it with a trusted copy, then pin it)",
                            file=sys.stderr,
                        )
                return target
            if not candidates:
                break
    error = HashMismatchError if wrong_hash else DownloadError
    if wrong_hash and record:
        errors.append(
            f"{file_name} has no pinned sha256; the expected one was recorded at its first "
            f"download ({record['url']}, {record['date']}). If the file changed legitimately, "
            "check the new one and pin its hash (`dynzoo weights pin NAME:TAG SHA256`)."
        )
    raise error(f"could not download {file_name}:\n  " + "\n  ".join(errors))
