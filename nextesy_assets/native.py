"""Typed front of the native (Rust) module; the only place that imports `_native`."""

from __future__ import annotations

import numpy as np

from . import _native

__all__ = ["native_version", "vector_stats"]


def vector_stats(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a 2-D float32 matrix: `(finite: bool[n], l2_norm: float64[n])`; NaN norm where not finite."""
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D, got shape {vectors.shape}")
    return _native.vector_stats(np.ascontiguousarray(vectors, dtype=np.float32))


def native_version() -> str:
    """Version of the compiled extension that was loaded."""
    return _native.version()
