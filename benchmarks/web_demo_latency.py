"""MicroNet-M0 (224×224, 1000 classes) float32 and int8 bundles in the web demo (LiteRT.js, WebAssembly,
headless Chromium, one thread) beside the Python LiteRT interpreter (XNNPACK, one thread) on the same
golden input, in one run: median milliseconds of N runs each, after one warm-up.

Needs what web_demo/install.sh installs, and the built page installed with dynzoo. Writes
benchmarks/results/web_demo_latency.md.

    python benchmarks/web_demo_latency.py [--runs 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BROWSER_CHECK = HERE.parent / "web_demo" / "test" / "browser_check.mjs"
MODES = ("float32", "int8")


def python_latency(bundle: Path, runs: int) -> float:
    """Median ms of set_tensor + invoke + get_tensor (what the page's timing covers) on golden/input.bin."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(bundle / "model.tflite"), num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    x = np.fromfile(bundle / "golden" / "input.bin", detail["dtype"]).reshape(detail["shape"])
    output = interpreter.get_output_details()[0]["index"]
    times = []
    for i in range(runs + 1):
        started = time.perf_counter()
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        interpreter.get_tensor(output)
        if i:
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def browser_latency(bundles: Path, names: list[str], runs: int, work: Path) -> dict[str, float]:
    """Median ms per bundle, as the page reports them, served by `dynzoo serve-demo`'s server."""
    from dynzoo.serve_demo import make_server

    server = make_server(bundles, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    spec = {"bundlesDir": str(bundles), "bundles": names, "runs": runs, "camera": False}
    (work / "spec.json").write_text(json.dumps(spec))
    try:
        done = subprocess.run(
            [
                "node",
                str(BROWSER_CHECK),
                f"http://127.0.0.1:{server.server_address[1]}/",
                str(work / "spec.json"),
                str(work),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        server.shutdown()
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    if result["failure"]:
        raise RuntimeError(result["failure"])
    return {name: result["bundles"][name]["inferenceMs"] for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    from dynzoo.cli import main as dynzoo_main

    work = Path(tempfile.mkdtemp(prefix="web_demo_latency_"))
    command = [
        "export",
        "micronet_m0",
        *(a for m in MODES for a in ("--mode", m)),
        "--calibration-size",
        "32",
        "--bundle",
        "--golden",
        "-o",
        str(work / "bundles"),
    ]
    assert dynzoo_main(command) == 0
    names = [f"micronet_m0_{mode}" for mode in MODES]
    python_before = {name: python_latency(work / "bundles" / name, args.runs) for name in names}
    browser = browser_latency(work / "bundles", names, args.runs, work)
    python_after = {name: python_latency(work / "bundles" / name, args.runs) for name in names}

    rows = [
        "| bundle | browser, LiteRT.js ms | Python LiteRT ms (before / after) | browser / Python |",
        "|---|---:|---:|---:|",
    ]
    for name in names:
        python = statistics.mean([python_before[name], python_after[name]])
        rows.append(
            f"| {name} | {browser[name]:.2f} | {python_before[name]:.2f} / {python_after[name]:.2f} | "
            f"{browser[name] / python:.2f}× |"
        )
    text = (
        f"# Web demo latency\n\n`python benchmarks/web_demo_latency.py --runs {args.runs}`: MicroNet-M0 "
        "224×224, 1000 classes, untrained weights, `dynzoo export --bundle` float32 and int8. Median of "
        f"{args.runs} runs after one warm-up, one thread each; the Python interpreter (XNNPACK) timed before "
        "and after the browser (LiteRT.js 2.5.3 WebAssembly in headless Chromium, through the web demo "
        "page) on the same golden input.\n\n" + "\n".join(rows) + "\n"
    )
    print(text)
    (HERE / "results" / "web_demo_latency.md").write_text(text)


if __name__ == "__main__":
    main()
