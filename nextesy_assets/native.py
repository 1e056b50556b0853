"""Typed front of the native (Rust) engine; the only place that imports `_native`.

`convert_file` runs the whole conversion of a landing file (parse, validate, write Parquet) in Rust
with the GIL released; its data-file list comes back through the Arrow C data interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from . import _native
from .lib.errors import InvalidLandingFileError

__all__ = [
    "ConvertResult",
    "convert_file",
    "count_records",
    "native_version",
    "object_vector",
    "rerank",
    "sq8_graph",
    "vector_stats",
]


@dataclass(frozen=True)
class ConvertResult:
    """What converting one landing file produced."""

    rows_in: int
    rows_good: int
    rows_rejected: int
    reasons: dict[str, int]
    data_files: pa.Table  # path, day, rows, bytes: one Parquet file per day(ts)
    rejects_path: str | None
    norm_min: float | None = None
    norm_max: float | None = None
    norm_mean: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


def convert_file(
    input_path: str | Path,
    fmt: str,
    out_dir: str | Path,
    rejects_path: str | Path,
    *,
    dims: int,
    batch_id: str,
    ingested_at_us: int,
    default_model: str = "default",
    raw_limit: int = 256 * 1024,
    row_group_rows: int = 40_000,
    zstd_level: int = 1,
    threads: int = 0,
    sidecar: str | Path | None = None,
) -> ConvertResult:
    """Convert a landing file of format `fmt` (jsonl, jsonl.gz, csv, npy, parquet) into Parquet data
    files under `out_dir` (`ts_day=YYYY-MM-DD/<batch_id>.parquet`) and its rejects into `rejects_path`
    (written only if there are rejects).

    Raises InvalidLandingFileError when the file cannot be converted at all (wrong magic, missing
    sidecar or vector column, unknown format); bad records are rejects, not errors.
    """
    try:
        summary, files = _native.convert(
            str(input_path),
            fmt,
            str(out_dir),
            str(rejects_path),
            dims=dims,
            default_model=default_model,
            raw_limit=raw_limit,
            batch_id=batch_id,
            ingested_at_us=ingested_at_us,
            row_group_rows=row_group_rows,
            zstd_level=zstd_level,
            threads=threads,
            sidecar=None if sidecar is None else str(sidecar),
        )
    except _native.InvalidInputError as exc:
        raise InvalidLandingFileError(str(exc)) from None
    good = summary["rows_good"]
    return ConvertResult(
        rows_in=summary["rows_in"],
        rows_good=good,
        rows_rejected=summary["rows_rejected"],
        reasons=dict(summary["reasons"]),
        data_files=pa.Table.from_batches([pa.record_batch(files)]),
        rejects_path=summary["rejects_path"],
        norm_min=summary["norm_min"] if good else None,
        norm_max=summary["norm_max"] if good else None,
        norm_mean=summary["norm_sum"] / good if good else None,
    )


def count_records(input_path: str | Path, fmt: str, sidecar: str | Path | None = None) -> tuple[int, str | None]:
    """`(records, damaged)`: the records a landing file holds without converting it, and why reading
    stopped early if it did (a damaged compressed stream)."""
    try:
        return _native.count_records(str(input_path), fmt, None if sidecar is None else str(sidecar))
    except _native.InvalidInputError as exc:
        raise InvalidLandingFileError(str(exc)) from None


def vector_stats(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a 2-D float32 matrix: `(finite: bool[n], l2_norm: float64[n])`; NaN norm where not finite."""
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D, got shape {vectors.shape}")
    return _native.vector_stats(np.ascontiguousarray(vectors, dtype=np.float32))


def object_vector(body: bytes) -> tuple[np.ndarray, int, int] | None:
    """(float32 vector, start, end) of a JSON object whose `vector` is a flat array of numbers, read in
    one pass (no Python float per element); `body[start:end]` is the array. None for any other body."""
    return _native.object_vector(body)


def native_version() -> str:
    """Version of the compiled extension that was loaded."""
    return _native.version()


def rerank(rows: np.ndarray, query: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) of the best k of `candidates` (labels into `rows`; -1 pads) scored exactly on the
    float32 `rows`, best first, ties to the lower label; -inf and -1 pad a short answer."""
    return _native.rerank(rows, query, np.ascontiguousarray(candidates, dtype=np.int64), k)


def sq8_graph(index: object) -> _native.Sq8Graph | None:
    """The native walk over a FAISS `IndexHNSWSQ` of 8-bit codes (inner product), reading its arrays in
    place; None for any other index, which FAISS then searches itself.

    The walk holds the index's addresses: it is valid until the index changes (the caller makes a new one
    after adding to the graph).
    """
    import faiss

    hnsw = getattr(index, "hnsw", None)
    storage = faiss.downcast_index(index.storage) if hnsw is not None else None  # type: ignore[attr-defined]
    if (
        not isinstance(storage, faiss.IndexScalarQuantizer)
        or storage.sq.qtype != faiss.ScalarQuantizer.QT_8bit
        or storage.metric_type != faiss.METRIC_INNER_PRODUCT
    ):
        return None
    dims = storage.d
    trained = faiss.vector_to_array(storage.sq.trained)  # vmin per dimension, then vdiff

    def region(vector: object) -> tuple[int, int]:
        size = vector.size()  # type: ignore[attr-defined]
        return (int(vector.data()) if size else 0, size)  # type: ignore[attr-defined]

    return _native.Sq8Graph(
        index,
        region(hnsw.neighbors),
        region(hnsw.offsets),
        region(hnsw.levels),
        region(storage.codes),
        faiss.vector_to_array(hnsw.cum_nneighbor_per_level).tolist(),
        trained[dims : 2 * dims].tolist(),
        int(hnsw.entry_point),
        int(hnsw.max_level),
    )
