"""Data-quality limits and thresholds, read from the environment on demand (all documented in the README)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from .errors import ConfigurationError

# Setting -> (variable, default). Floats and ints are parsed by the default's type.
THRESHOLD_VARS: dict[str, tuple[str, float | int]] = {
    "max_file_bytes": ("NEXTESY_MAX_FILE_BYTES", 20 * 1024**3),
    "max_records": ("NEXTESY_MAX_RECORDS", 50_000_000),
    "norm_min": ("NEXTESY_NORM_MIN", 0.5),
    "norm_max": ("NEXTESY_NORM_MAX", 2.0),
    "max_reject_ratio": ("NEXTESY_MAX_REJECT_RATIO", 0.5),
    "max_duplicate_ratio": ("NEXTESY_MAX_DUPLICATE_RATIO", 0.01),
    "near_duplicate_step": ("NEXTESY_NEAR_DUPLICATE_STEP", 0.05),
    "max_centroid_shift": ("NEXTESY_DRIFT_MAX_CENTROID_SHIFT", 0.1),
    "max_norm_psi": ("NEXTESY_DRIFT_MAX_NORM_PSI", 0.25),
    "drift_reference_batches": ("NEXTESY_DRIFT_REFERENCE_BATCHES", 20),
    "ts_past_days": ("NEXTESY_TS_MAX_AGE_DAYS", 3650),
    "ts_future_days": ("NEXTESY_TS_MAX_FUTURE_DAYS", 1),
    "max_replica_lag_s": ("NEXTESY_REPLICA_MAX_LAG_S", 3600),
    "min_hot_recall": ("NEXTESY_HOT_MIN_RECALL", 0.95),
    "max_hot_lag_s": ("NEXTESY_HOT_MAX_LAG_S", 3600),
}


@dataclass(frozen=True)
class Thresholds:
    """Limits the asset checks hold batches and tables to.

    Attributes:
        max_file_bytes: Largest landing file accepted (raw_embeddings:within_limits).
        max_records: Most records one landing file may hold.
        norm_min: Smallest L2 norm a vector may have (parquet_batches:norm_band).
        norm_max: Largest L2 norm a vector may have.
        max_reject_ratio: Largest share of a batch's records that may be quarantined before the batch is held.
        max_duplicate_ratio: Largest share of exact or near duplicate vectors in a batch before a warning.
        near_duplicate_step: Quantisation step for near-duplicate hashing of unit vectors.
        max_centroid_shift: Largest cosine distance between a batch's centroid and the recent batches'.
        max_norm_psi: Largest population stability index of the norm distribution against recent batches.
        drift_reference_batches: How many earlier batches form the drift reference.
        ts_past_days: Oldest event time accepted by the batch expectations, in days before now.
        ts_future_days: Latest event time accepted, in days after now.
        max_replica_lag_s: Largest replica lag in seconds before gcs_replica:replica_lag fails.
        min_hot_recall: Smallest recall@10 of the hot index against exact search (hot_index:hot_recall).
        max_hot_lag_s: Largest hot index lag in seconds behind the table before hot_index:hot_staleness fails.
    """

    max_file_bytes: int = 20 * 1024**3
    max_records: int = 50_000_000
    norm_min: float = 0.5
    norm_max: float = 2.0
    max_reject_ratio: float = 0.5
    max_duplicate_ratio: float = 0.01
    near_duplicate_step: float = 0.05
    max_centroid_shift: float = 0.1
    max_norm_psi: float = 0.25
    drift_reference_batches: int = 20
    ts_past_days: int = 3650
    ts_future_days: int = 1
    max_replica_lag_s: int = 3600
    min_hot_recall: float = 0.95
    max_hot_lag_s: int = 3600

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None) -> Thresholds:
        env = os.environ if env is None else env
        values: dict[str, float | int] = {}
        for spec in fields(cls):
            variable, default = THRESHOLD_VARS[spec.name]
            raw = env.get(variable)
            if raw is None or raw == "":
                values[spec.name] = default
                continue
            try:
                values[spec.name] = type(default)(raw)
            except ValueError:
                kind = "a whole number" if isinstance(default, int) else "a number"
                raise ConfigurationError(f"{variable} must be {kind}, got {raw!r}") from None
            if values[spec.name] < 0:
                raise ConfigurationError(f"{variable} must not be negative, got {raw!r}")
        thresholds = cls(**values)  # type: ignore[arg-type]
        if thresholds.norm_min > thresholds.norm_max:
            raise ConfigurationError(
                f"NEXTESY_NORM_MIN ({thresholds.norm_min}) is above NEXTESY_NORM_MAX ({thresholds.norm_max})"
            )
        return thresholds
