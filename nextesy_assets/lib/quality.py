"""Embedding-aware data quality: a batch's written Parquet profiled once, then judged by each rule."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import storage
from .schema import EMBEDDINGS_ARROW
from .settings import Settings
from .thresholds import Thresholds

_HASH_SEED = 0x5EED
_PSI_BINS = 20


def _row_hashes(matrix: np.ndarray) -> np.ndarray:
    """A 64-bit hash per row of an integer-viewable matrix (random linear hash, wrapping arithmetic)."""
    rng = np.random.default_rng(_HASH_SEED)
    weights = rng.integers(1, 2**63, size=matrix.shape[1], dtype=np.uint64) | np.uint64(1)
    return (matrix.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


@dataclass
class ModelStats:
    """What drift is measured on: sum of unit vectors (a centroid that aggregates) and a norm histogram."""

    count: int
    unit_sum: list[float]
    norm_hist: list[int]

    def centroid(self) -> np.ndarray:
        vector = np.asarray(self.unit_sum, dtype=np.float64)
        return vector / max(np.linalg.norm(vector), 1e-12)


@dataclass
class BatchProfile:
    rows: int = 0
    schema_problems: list[str] = field(default_factory=list)
    lengths: dict[int, int] = field(default_factory=dict)
    non_finite: int = 0
    zero_vectors: int = 0
    outside_band: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    norm_min: float = math.nan
    norm_max: float = math.nan
    norm_mean: float = math.nan
    models: dict[str, ModelStats] = field(default_factory=dict)
    scalars: pa.Table | None = None  # id, model, ts, norm: what the expectation suite looks at


def norm_bins(thresholds: Thresholds) -> np.ndarray:
    """Histogram edges for norms: even bins across the allowed band, plus one bin each side."""
    inner = np.linspace(thresholds.norm_min, thresholds.norm_max, _PSI_BINS + 1)
    return np.concatenate([[-np.inf], inner, [np.inf]])


def profile_batch(
    data_files: list[str], dims: int, thresholds: Thresholds, expected_schema: pa.Schema = EMBEDDINGS_ARROW
) -> BatchProfile:
    """Read the batch's Parquet files back (what was really written) and measure everything once."""
    profile = BatchProfile()
    bins = norm_bins(thresholds)
    exact: list[np.ndarray] = []
    near: list[np.ndarray] = []
    norms_all: list[np.ndarray] = []
    scalars: list[pa.Table] = []
    for uri in data_files:
        fs, path = storage.resolve(uri)
        with fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            schema = parquet.schema_arrow
            if not schema.remove_metadata().equals(expected_schema, check_metadata=False):
                found, wanted = set(schema.names), set(expected_schema.names)
                profile.schema_problems.append(
                    f"{uri}: columns {sorted(found - wanted)} unexpected, {sorted(wanted - found)} missing"
                    if found != wanted
                    else f"{uri}: column types differ from {expected_schema}"
                )
            for chunk in parquet.iter_batches(batch_size=16_384, columns=["id", "model", "vector", "ts"]):
                _profile_chunk(profile, chunk, dims, thresholds, bins, exact, near, norms_all, scalars)
    if norms_all:
        norms = np.concatenate(norms_all)
        finite = norms[np.isfinite(norms)]
        if finite.size:
            profile.norm_min, profile.norm_max = float(finite.min()), float(finite.max())
            profile.norm_mean = float(finite.mean())
    for hashes, attr in ((exact, "exact_duplicates"), (near, "near_duplicates")):
        if hashes:
            joined = np.concatenate(hashes)
            setattr(profile, attr, int(joined.size - np.unique(joined).size))
    if scalars:
        profile.scalars = pa.concat_tables(scalars)
    return profile


def _profile_chunk(
    profile: BatchProfile,
    chunk: pa.RecordBatch,
    dims: int,
    thresholds: Thresholds,
    bins: np.ndarray,
    exact: list[np.ndarray],
    near: list[np.ndarray],
    norms_all: list[np.ndarray],
    scalars: list[pa.Table],
) -> None:
    profile.rows += chunk.num_rows
    vectors = chunk.column("vector")
    lengths = pc.list_value_length(vectors).to_numpy(zero_copy_only=False)
    for length, count in zip(*np.unique(lengths, return_counts=True), strict=True):
        profile.lengths[int(length)] = profile.lengths.get(int(length), 0) + int(count)
    norms = np.full(chunk.num_rows, np.nan)
    shaped = lengths == dims
    if shaped.any():
        flat = pc.list_flatten(vectors.filter(pa.array(shaped))).to_numpy(zero_copy_only=False)
        matrix = flat.astype(np.float32, copy=False).reshape(-1, dims)
        finite = np.isfinite(matrix).all(axis=1)
        profile.non_finite += int((~finite).sum())
        row_norms = np.linalg.norm(matrix.astype(np.float64), axis=1)
        profile.zero_vectors += int((finite & (row_norms == 0)).sum())
        norms[shaped] = np.where(finite, row_norms, np.nan)
        ok = finite & (row_norms > 0)
        band = (row_norms >= thresholds.norm_min) & (row_norms <= thresholds.norm_max)
        profile.outside_band += int((ok & ~band).sum())
        exact.append(_row_hashes(matrix.view(np.uint32)))
        units = np.where(ok[:, None], matrix / np.where(ok, row_norms, 1.0)[:, None], 0.0)
        near.append(_row_hashes(np.round(units / thresholds.near_duplicate_step).astype(np.int64)))
        models = np.asarray(chunk.column("model").filter(pa.array(shaped)).to_pylist(), dtype=object)
        for model in np.unique(models):
            rows = (models == model) & ok
            stats = profile.models.setdefault(str(model), ModelStats(0, [0.0] * dims, [0] * (len(bins) - 1)))
            stats.count += int(rows.sum())
            stats.unit_sum = (np.asarray(stats.unit_sum) + units[rows].sum(axis=0)).tolist()
            hist, _ = np.histogram(row_norms[rows], bins=bins)
            stats.norm_hist = (np.asarray(stats.norm_hist) + hist).tolist()
    norms_all.append(norms)
    scalars.append(
        pa.table(
            {
                "id": chunk.column("id"),
                "model": chunk.column("model"),
                "ts": chunk.column("ts"),
                "norm": pa.array(norms, pa.float64()),
            }
        )
    )


# ---- drift -------------------------------------------------------------------------------------


def psi(expected: np.ndarray, actual: np.ndarray, floor: float = 1e-4) -> float:
    """Population stability index of two histograms over the same bins."""
    e = np.maximum(expected / max(expected.sum(), 1), floor)
    a = np.maximum(actual / max(actual.sum(), 1), floor)
    return float(((a - e) * np.log(a / e)).sum())


@dataclass(frozen=True)
class Drift:
    model: str
    rows: int
    reference_rows: int
    centroid_shift: float
    norm_psi: float


def drift(current: dict[str, ModelStats], reference: list[dict[str, ModelStats]]) -> list[Drift]:
    """Per model: cosine distance between this batch's centroid and the reference's, and the norm PSI."""
    results = []
    for model, stats in sorted(current.items()):
        earlier = [r[model] for r in reference if model in r and r[model].count]
        if not earlier or not stats.count:
            continue
        unit_sum = np.sum([np.asarray(s.unit_sum) for s in earlier], axis=0)
        hist = np.sum([np.asarray(s.norm_hist) for s in earlier], axis=0)
        ref_centroid = unit_sum / max(np.linalg.norm(unit_sum), 1e-12)
        shift = 1.0 - float(np.dot(stats.centroid(), ref_centroid))
        results.append(
            Drift(
                model=model,
                rows=stats.count,
                reference_rows=int(sum(s.count for s in earlier)),
                centroid_shift=round(shift, 6),
                norm_psi=round(psi(hist, np.asarray(stats.norm_hist)), 6),
            )
        )
    return results


def stats_uri(settings: Settings, batch_id: str) -> str:
    return storage.join(settings.batches_uri, batch_id, "stats.json")


def save_stats(settings: Settings, batch_id: str, models: dict[str, ModelStats]) -> None:
    payload = {model: asdict(stats) for model, stats in models.items()}
    storage.write_bytes(stats_uri(settings, batch_id), orjson.dumps(payload))


def load_stats(settings: Settings, batch_id: str) -> dict[str, ModelStats] | None:
    try:
        raw: dict[str, Any] = orjson.loads(storage.read_bytes(stats_uri(settings, batch_id)))
    except FileNotFoundError:
        return None
    return {model: ModelStats(**value) for model, value in raw.items()}
