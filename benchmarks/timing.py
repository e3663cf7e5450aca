"""Side-by-side timing of training steps, shared by the benchmark scripts (run as
``python benchmarks/<script>.py``, so this folder is on the import path)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable


def time_train_steps(
    models: dict,
    x,
    y,
    steps: int,
    first_step_context: dict[str, Callable[[], contextlib.AbstractContextManager]] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Per label of ``models``: the seconds of the first ``train_on_batch`` (tracing and instantiating the
    step; inside ``first_step_context[label]()`` where given) and the mean seconds of ``steps`` more. The
    later steps alternate between the models, so that all of them see the same drift of a shared machine."""
    contexts = first_step_context or {}
    first, totals = {}, dict.fromkeys(models, 0.0)
    for label, model in models.items():
        started = time.perf_counter()
        with contexts.get(label, contextlib.nullcontext)():
            model.train_on_batch(x, y)
        first[label] = time.perf_counter() - started
    for _ in range(steps):
        for label, model in models.items():
            started = time.perf_counter()
            model.train_on_batch(x, y)
            totals[label] += time.perf_counter() - started
    return first, {label: total / steps for label, total in totals.items()}
