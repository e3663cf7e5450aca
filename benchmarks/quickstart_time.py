"""Wall time and results of ``dynzoo quickstart`` from a fresh process (what a new user runs).

Runs ``python -m dynzoo.cli quickstart`` into a temporary folder (offline; the Android assets are left
alone), times the whole command including Python and TensorFlow start-up, and records its tables.

    python benchmarks/quickstart_time.py       # writes benchmarks/results/quickstart.md
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "quickstart.md"


def main() -> None:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "dynzoo.cli",
            "quickstart",
            "--out",
            f"{tmp}/bundles",
            "--run-dir",
            f"{tmp}/run",
        ]
        started = time.perf_counter()
        done = subprocess.run(
            command,
            cwd=tmp,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"dynzoo quickstart failed:\n{done.stderr[-3000:]}")
    blocks = [block.strip().replace(tmp, "<out>") for block in done.stdout.split("\n\n")]
    tables = [block for block in blocks if block and all(line.startswith("|") for line in block.splitlines())]
    lines = [
        "# `dynzoo quickstart`: wall time and results",
        "",
        (
            "Command: `python benchmarks/quickstart_time.py` (runs `python -m dynzoo.cli quickstart` in a fresh "
            f"process, offline). Machine: {os.cpu_count()} CPU cores ({platform.machine()}); load average "
            f"{load_before[0]:.1f} when it started (the cores are shared)."
        ),
        "",
        (
            f"**Wall time: {seconds:.0f} s** (Python and TensorFlow start-up, training, evaluation, float32 and int8 "
            "export with golden files, LiteRT runs)."
        ),
        "",
        "\n\n".join(tables),
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
