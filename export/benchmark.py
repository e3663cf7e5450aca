"""TFLite latency measured in a fresh subprocess through the LiteRT interpreter (``ai_edge_litert``).

Each measurement runs in its own Python process that imports only ``ai_edge_litert`` and NumPy (not
TensorFlow), so

* a crashing interpreter (XNNPACK has aborted the process on a degenerate model) becomes an error
  in the result instead of killing the caller;
* the peak memory is that of the interpreter and the model, not of the caller's TensorFlow.

>>> from dynzoo.export.benchmark import measure_latency
>>> r = measure_latency("model.tflite", num_threads=1, xnnpack=True)
>>> r.median_ms, r.p90_ms, r.peak_memory_mb

:func:`compare_latency` times several models in one process, alternating between them in short blocks,
so that their ratios are measured under the same machine state (the way to compare on a shared machine).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

DEFAULT_WARMUP = 10
DEFAULT_RUNS = 100


@dataclasses.dataclass(frozen=True)
class LatencyResult:
    """One latency measurement. ``error`` is set (and the timings are None) when the interpreter failed
    or its process crashed."""

    model: str
    num_threads: int
    xnnpack: bool
    warmup: int
    runs: int
    median_ms: float | None = None
    p90_ms: float | None = None
    mean_ms: float | None = None
    min_ms: float | None = None
    peak_memory_mb: float | None = None  # peak resident memory of the process, interpreter + model
    model_memory_mb: float | None = None  # the part of it added by loading and running the model
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def measure_latency(
    model: str | os.PathLike | bytes,
    *,
    num_threads: int = 1,
    xnnpack: bool = True,
    warmup: int = DEFAULT_WARMUP,
    runs: int = DEFAULT_RUNS,
    timeout_s: float = 600.0,
    name: str | None = None,
) -> LatencyResult:
    """Latency of one batch-1 inference of a ``.tflite`` model (path or flatbuffer bytes).

    Runs ``warmup`` untimed invocations, then times ``runs`` invocations one by one, in a fresh
    subprocess. The input is random data of the model's input type, fixed by a seed.

    Args:
        model: path of a ``.tflite`` file, or the flatbuffer itself.
        num_threads: interpreter threads (≥ 1).
        xnnpack: True: the default delegates (XNNPACK); False:
            ``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`` (builtin kernels only).
        warmup: untimed runs first (≥ 0).
        runs: timed runs (≥ 1).
        timeout_s: the subprocess is killed after this many seconds (reported as an error).
        name: label of the model in the result (default: the file name).

    Returns:
        a :class:`LatencyResult`; on failure its ``error`` says what happened (exception text, or the
        signal / exit status of the crashed process) and the timings are None.
    """
    _check_counts(("num_threads", num_threads, 1), ("warmup", warmup, 0), ("runs", runs, 1))
    with tempfile.TemporaryDirectory(prefix="dynzoo_bench_") as tmp:
        path = _tflite_path(model, Path(tmp) / "model.tflite", "model")
        label = name or path.name
        request = {
            "path": str(path),
            "num_threads": num_threads,
            "xnnpack": bool(xnnpack),
            "warmup": warmup,
            "runs": runs,
        }
        base = dict(model=label, num_threads=num_threads, xnnpack=bool(xnnpack), warmup=warmup, runs=runs)
        result, error = _run_child(_CHILD, request, timeout_s)
    return LatencyResult(**base, error=error) if error else LatencyResult(**base, **result)


def _check_counts(*checks: tuple[str, int, int]) -> None:
    """Each ``(argument, value, minimum)``: the value must be an integer ≥ the minimum."""
    for arg, value, minimum in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"`{arg}` must be an integer >= {minimum}, got {value!r}.")


def _tflite_path(model: str | os.PathLike | bytes, spill: Path, arg: str) -> Path:
    """The file of ``model``: a path is checked to exist, a flatbuffer is written to ``spill``."""
    if isinstance(model, (bytes, bytearray)):
        spill.write_bytes(model)
        return spill
    path = Path(model)
    if not path.is_file():
        raise ValueError(f"`{arg}`: no such .tflite file {os.fspath(model)!r}.")
    return path


def _run_child(program: str, request: dict, timeout_s: float) -> tuple[dict | None, str | None]:
    """Run a child ``program`` with its JSON ``request``: (its JSON result, None) or (None, what failed)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", program, json.dumps(request)], capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout_s:g} s"
    if proc.returncode != 0:
        status = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return None, f"interpreter process failed ({status}): {tail}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return (None, result["error"]) if "error" in result else (result, None)


@dataclasses.dataclass(frozen=True)
class LatencyComparison:
    """Latencies of several models timed in alternation (:func:`compare_latency`).

    ``median_ms[m]``: median of all of ``m``'s timed runs. ``ratio[m]``: median over the cycles of
    (``m``'s block median / the reference's block median in the same cycle); ``ratio_p10`` / ``ratio_p90``:
    the 10th / 90th percentiles of those per-cycle ratios; ``cycle_ms[m]``: ``m``'s block median in each
    cycle (:meth:`ratio_between` takes any two models' ratio the same way). ``error`` is set (and the rest
    empty) when the interpreter process failed.
    """

    reference: str
    num_threads: int
    xnnpack: bool
    warmup: int
    cycles: int
    block: int
    median_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    ratio: dict[str, float] = dataclasses.field(default_factory=dict)
    ratio_p10: dict[str, float] = dataclasses.field(default_factory=dict)
    ratio_p90: dict[str, float] = dataclasses.field(default_factory=dict)
    cycle_ms: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def ratio_between(self, label: str, reference: str) -> float:
        """Median over the cycles of ``label``'s block median / ``reference``'s in the same cycle."""
        return float(np.median(np.asarray(self.cycle_ms[label]) / np.asarray(self.cycle_ms[reference])))


def compare_latency(
    models: Mapping[str, str | os.PathLike | bytes],
    *,
    reference: str | None = None,
    num_threads: int = 1,
    xnnpack: bool = True,
    warmup: int = DEFAULT_WARMUP,
    cycles: int = 30,
    block: int = 5,
    timeout_s: float = 1800.0,
) -> LatencyComparison:
    """Batch-1 latencies of ``models`` and their ratios to ``reference``, measured side by side.

    One fresh subprocess loads every model, warms each up, then runs ``cycles`` cycles; in each cycle
    every model runs ``block`` timed invocations, in an order rotated from cycle to cycle. A ratio is
    taken within each cycle, where both models met the same machine state, so slow drift and bursts of
    load on a shared machine cancel out of it (they do not between models timed minutes apart).
    Inputs are random data of each model's input type, fixed by a seed.

    Args:
        models: label → path of a ``.tflite`` file, or the flatbuffer itself (at least one).
        reference: the label the ratios are taken against (default: the first).
        num_threads: interpreter threads (≥ 1).
        xnnpack: True: the default delegates (XNNPACK); False: builtin kernels only.
        warmup: untimed invocations of each model first (≥ 0).
        cycles: alternation cycles (≥ 1).
        block: timed invocations of each model per cycle (≥ 1).
        timeout_s: the subprocess is killed after this many seconds (reported as an error).

    Returns:
        a :class:`LatencyComparison`. All models share one interpreter process, so a crash in one is
        reported as the comparison's ``error``.
    """
    if not models:
        raise ValueError("`models` must name at least one model.")
    reference = next(iter(models)) if reference is None else reference
    if reference not in models:
        raise ValueError(f"`reference` must be one of {list(models)}, got {reference!r}.")
    _check_counts(("num_threads", num_threads, 1), ("warmup", warmup, 0), ("cycles", cycles, 1), ("block", block, 1))
    base = dict(
        reference=reference, num_threads=num_threads, xnnpack=bool(xnnpack), warmup=warmup, cycles=cycles, block=block
    )
    with tempfile.TemporaryDirectory(prefix="dynzoo_compare_") as tmp:
        paths = [
            _tflite_path(model, Path(tmp) / f"{index}.tflite", f"models[{label!r}]")
            for index, (label, model) in enumerate(models.items())
        ]
        request = {
            "paths": [str(p) for p in paths],
            "num_threads": num_threads,
            "xnnpack": bool(xnnpack),
            "warmup": warmup,
            "cycles": cycles,
            "block": block,
        }
        result, error = _run_child(_COMPARE_CHILD, request, timeout_s)
    if error:
        return LatencyComparison(**base, error=error)
    times = dict(zip(models, (np.asarray(t) for t in result["times"]), strict=False))  # each (cycles, block)
    ref = np.median(times[reference], axis=1)
    ratios = {label: np.median(t, axis=1) / ref for label, t in times.items()}
    return LatencyComparison(
        **base,
        median_ms={label: float(np.median(t)) for label, t in times.items()},
        ratio={label: float(np.median(r)) for label, r in ratios.items()},
        ratio_p10={label: float(np.percentile(r, 10)) for label, r in ratios.items()},
        ratio_p90={label: float(np.percentile(r, 90)) for label, r in ratios.items()},
        cycle_ms={label: np.median(t, axis=1).tolist() for label, t in times.items()},
    )


# The child programs: stdlib + NumPy + ai_edge_litert only, so that they start fast and their memory is
# the interpreter's. Each prints one JSON line (its result or {"error": ...}).
_CHILD_LOADER = r"""
import json, resource, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

def load(path, req):
    # an interpreter of `path`, its inputs random data of their type (seeded), warmed up
    resolver = OpResolverType.AUTO if req["xnnpack"] else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_path=path, num_threads=req["num_threads"], experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        if np.issubdtype(d["dtype"], np.integer):
            info = np.iinfo(d["dtype"])
            x = rng.integers(info.min, info.max, size=d["shape"], endpoint=True).astype(d["dtype"])
        else:
            x = rng.standard_normal(d["shape"]).astype(d["dtype"])
        interp.set_tensor(d["index"], x)
    for _ in range(req["warmup"]):
        interp.invoke()
    return interp

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

req = json.loads(sys.argv[1])
"""

# One model: the timings of ``runs`` invocations and the process's peak memory.
_CHILD = (
    _CHILD_LOADER
    + r"""
baseline = rss_mb()
try:
    interp = load(req["path"], req)
    times = []
    for _ in range(req["runs"]):
        t0 = time.perf_counter_ns()
        interp.invoke()
        times.append((time.perf_counter_ns() - t0) / 1e6)
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
    sys.exit(0)
t = np.asarray(times)
with open("/proc/self/status") as f:  # VmHWM starts afresh at exec (ru_maxrss would include the parent's)
    peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
print(json.dumps({
    "median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
    "mean_ms": float(t.mean()), "min_ms": float(t.min()),
    "peak_memory_mb": round(peak, 2), "model_memory_mb": round(max(peak - baseline, 0.0), 2),
}))
"""
)

# Several models in one process, timed in rotating blocks: {"times": [per model: cycles × block, in ms]}.
_COMPARE_CHILD = (
    _CHILD_LOADER
    + r"""
try:
    interps = [load(path, req) for path in req["paths"]]
    n = len(interps)
    times = [[[0.0] * req["block"] for _ in range(req["cycles"])] for _ in range(n)]
    for cycle in range(req["cycles"]):
        for k in range(n):
            i = (cycle + k) % n
            for j in range(req["block"]):
                t0 = time.perf_counter_ns()
                interps[i].invoke()
                times[i][cycle][j] = (time.perf_counter_ns() - t0) / 1e6
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
    sys.exit(0)
print(json.dumps({"times": times}))
"""
)
