"""TensorFlow's and LiteRT's native log lines, kept out of the ``dynzoo`` command's output.

TensorFlow and LiteRT write start-up and progress lines from C++ straight to the process's stderr:
``I0000 … cpu_feature_guard``, ``W0000 … Ignored output_format``, ``INFO: Created TensorFlow Lite XNNPACK
delegate for CPU``, the calibrator's ``fully_quantize: …``. The ``dynzoo`` command hides them by default
(:func:`quiet_native_logs_in_the_command`); ``dynzoo --verbose COMMAND`` or ``DYNZOO_VERBOSE=1`` shows
them. Code that imports dynzoo as a library is never affected: only the command turns the quiet mode on.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

VERBOSE_ENV = "DYNZOO_VERBOSE"
COMMAND = "dynzoo"
_quiet = False


def in_the_command() -> bool:
    """Whether this process is the ``dynzoo`` command (its console script), not a program that imports dynzoo."""
    return Path((sys.argv or [""])[0]).name == COMMAND


def quiet_native_logs_in_the_command() -> None:
    """In the ``dynzoo`` command, hide the native log lines for the rest of the process, unless it runs as
    ``dynzoo --verbose …`` or ``DYNZOO_VERBOSE`` is set. Runs when the package is imported, before
    TensorFlow is: TensorFlow reads its C++ log level (``TF_CPP_MIN_LOG_LEVEL``) once, at import."""
    global _quiet
    if not in_the_command() or sys.argv[1:2] == ["--verbose"]:
        return
    if os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ INFO and WARNING lines; errors still show
    _quiet = True


@contextlib.contextmanager
def native_stderr_quiet() -> Iterator[None]:
    """In quiet mode, what native code writes to stderr inside the block goes to a temporary file, and is
    shown only if the block raises (a converter's diagnostics then still reach the user). Outside the
    quiet mode it does nothing. For the calls whose native logs ignore ``TF_CPP_MIN_LOG_LEVEL``: the TFLite
    converter and calibrator, and the LiteRT interpreter's delegate lines."""
    if not _quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))
