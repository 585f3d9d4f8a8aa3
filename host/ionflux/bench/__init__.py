"""Benchmarks for ``just bench``: every section runs in one process, so the
figures compare as ratios on these noisy shared machines."""

from ._timing import Row, once, per_call

__all__ = ["Row", "once", "per_call"]
