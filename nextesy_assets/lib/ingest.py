"""A batch from landing file to Parquet: read, validate, write one data file per day plus the rejects."""

from __future__ import annotations

import hashlib
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from . import failpoints, storage
from .batches import BatchRegistration
from .errors import LandingFileChangedError
from .records import ParsedBatch, open_landing, parse_jsonl
from .schema import EXTRA_ARROW_TYPES, QUARANTINE_ARROW, VECTOR_TYPE, embeddings_arrow
from .settings import Settings

_DAY_MICROS = 86_400_000_000


@dataclass(frozen=True)
class DataFileInfo:
    uri: str
    day: str
    rows: int
    bytes: int


@dataclass
class BatchManifest:
    """What converting a batch produced; stored beside the batch so later steps need no shared memory."""

    batch_id: str
    source_uri: str
    format: str
    input_bytes: int
    sha256: str
    rows_in: int
    rows_good: int
    rows_rejected: int
    reasons: dict[str, int]
    data_files: list[DataFileInfo] = field(default_factory=list)
    rejects_uri: str | None = None
    norm_min: float | None = None
    norm_mean: float | None = None
    norm_max: float | None = None
    duration_s: float = 0.0

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes) -> BatchManifest:
        raw = orjson.loads(data)
        raw["data_files"] = [DataFileInfo(**f) for f in raw["data_files"]]
        return cls(**raw)

    @property
    def output_bytes(self) -> int:
        return sum(f.bytes for f in self.data_files)


def manifest_uri(settings: Settings, batch_id: str) -> str:
    return storage.join(settings.batches_uri, batch_id, "manifest.json")


def load_manifest(settings: Settings, batch_id: str) -> BatchManifest | None:
    try:
        return BatchManifest.from_json(storage.read_bytes(manifest_uri(settings, batch_id)))
    except FileNotFoundError:
        return None


def read_landing(registration: BatchRegistration) -> bytes:
    """The landing file's bytes, refusing a file that changed since its batch was registered."""
    current = storage.stat(registration.uri)
    if current.etag != registration.etag:
        raise LandingFileChangedError(
            f"landing file {registration.uri} changed since batch {registration.batch_id} was registered "
            f"(etag {registration.etag} -> {current.etag}); the new content is picked up as a new batch"
        )
    return storage.read_bytes(registration.uri)


def count_records(data: bytes, fmt: str) -> tuple[int, str | None]:
    """Non-blank lines, the records a JSONL file holds, and what is damaged (a broken gzip counts what decodes)."""
    count = 0
    try:
        for line in open_landing(data, fmt):
            count += bool(line.strip())
    except (OSError, EOFError, zlib.error) as exc:
        return count, f"cannot decode past record {count}: {exc}"
    return count, None


def _embeddings_table(
    parsed: ParsedBatch, batch_id: str, ingested_at: datetime, extra_columns: tuple[tuple[str, str], ...] = ()
) -> pa.Table:
    n = parsed.rows_good
    values = pa.array(parsed.vectors.reshape(-1), type=pa.float32())
    offsets = pa.array(np.arange(0, (n + 1) * parsed.dims, parsed.dims, dtype=np.int32), type=pa.int32())
    vectors = pa.ListArray.from_arrays(offsets, values, type=VECTOR_TYPE)
    return pa.Table.from_arrays(
        [
            pa.array(parsed.ids, pa.string()),
            pa.array(parsed.models, pa.string()),
            vectors,
            pa.array(parsed.ts_micros, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            pa.array(parsed.sources, pa.string()),
            pa.array(parsed.payloads, pa.string()),
            pa.array([batch_id] * n, pa.string()),
            pa.array([ingested_at] * n, pa.timestamp("us", tz="UTC")),
            *(pa.array(parsed.extras[name], EXTRA_ARROW_TYPES[kind]) for name, kind in extra_columns),
        ],
        schema=embeddings_arrow(extra_columns),
    )


def _rejects_table(parsed: ParsedBatch, batch_id: str, at: datetime) -> pa.Table:
    rejects = parsed.rejects
    return pa.Table.from_pylist(
        [
            {
                "batch_id": batch_id,
                "record_index": r.record_index,
                "reason": str(r.reason),
                "detail": r.detail,
                "raw": r.raw,
                "quarantined_at": at,
            }
            for r in rejects
        ],
        schema=QUARANTINE_ARROW,
    )


def write_parquet(table: pa.Table, uri: str, row_group_rows: int) -> int:
    """Write `table` as Iceberg-ready Parquet (zstd, BYTE_STREAM_SPLIT vectors); returns the file size."""
    fs, path = storage.resolve(uri)
    storage.ensure_parent(fs, path)
    pq.write_table(
        table,
        path,
        filesystem=fs,
        row_group_size=row_group_rows,
        compression="zstd",
        compression_level=1,
        use_dictionary=["model", "source", "batch_id"] if "vector" in table.column_names else True,
        column_encoding={"vector.list.element": "BYTE_STREAM_SPLIT"} if "vector" in table.column_names else None,
        write_statistics=True,
    )
    return fs.get_file_info(path).size


def data_file_uri(table_location: str, day: str, batch_id: str) -> str:
    # Deterministic: a retried conversion overwrites its own uncommitted file instead of leaving a twin.
    return storage.join(table_location, "data", f"ts_day={day}", f"{batch_id}.parquet")


def convert_batch(settings: Settings, registration: BatchRegistration, table_location: str) -> BatchManifest:
    """Parse and validate a landing file, write its good rows into the table's data location, one
    Parquet file per day, and its rejects beside the batch; store and return the manifest."""
    started = time.perf_counter()
    data = read_landing(registration)
    parsed = parse_jsonl(
        open_landing(data, registration.format),
        settings.dims,
        settings.default_model,
        settings.raw_limit,
        settings.extra_columns,
    )
    now = datetime.now(UTC)
    batch_id = registration.batch_id
    manifest = BatchManifest(
        batch_id=batch_id,
        source_uri=registration.uri,
        format=registration.format,
        input_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        rows_in=parsed.rows_in,
        rows_good=parsed.rows_good,
        rows_rejected=len(parsed.rejects),
        reasons=dict(Counter(str(r.reason) for r in parsed.rejects)),
    )
    if parsed.rows_good:
        manifest.norm_min = float(parsed.norms.min())
        manifest.norm_mean = float(parsed.norms.mean())
        manifest.norm_max = float(parsed.norms.max())
        table = _embeddings_table(parsed, batch_id, now, settings.extra_columns)
        days = np.asarray(parsed.ts_micros, dtype=np.int64) // _DAY_MICROS
        row_group_rows = max(1, settings.row_group_bytes // (settings.dims * 4 + 64))
        for day in np.unique(days):
            label = datetime.fromtimestamp(int(day) * 86_400, UTC).strftime("%Y-%m-%d")
            part = table.take(np.flatnonzero(days == day))
            uri = data_file_uri(table_location, label, batch_id)
            size = write_parquet(part, uri, row_group_rows)
            manifest.data_files.append(DataFileInfo(uri=uri, day=label, rows=part.num_rows, bytes=size))
            failpoints.hit("ingest.after_data_file")
    if parsed.rejects:
        manifest.rejects_uri = storage.join(settings.batches_uri, batch_id, "rejects.parquet")
        write_parquet(_rejects_table(parsed, batch_id, now), manifest.rejects_uri, 65_536)
    manifest.duration_s = round(time.perf_counter() - started, 3)
    storage.write_bytes(manifest_uri(settings, batch_id), manifest.to_json())
    return manifest


def read_rejects(manifest: BatchManifest) -> pa.Table:
    if manifest.rejects_uri is None:
        return QUARANTINE_ARROW.empty_table()
    fs, path = storage.resolve(manifest.rejects_uri)
    return pq.read_table(path, filesystem=fs, schema=QUARANTINE_ARROW)
