"""Small timing helpers shared by the benchmark sections."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import NamedTuple


class Row(NamedTuple):
    label: str
    value: float
    unit: str


def per_call(
    fn: Callable[[], object], *, n: int = 500, repeats: int = 7, warmup: int = 50
) -> float:
    """Median over ``repeats`` batches of the mean seconds per call in a batch of ``n``."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) / n)
    return statistics.median(samples)


def once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
