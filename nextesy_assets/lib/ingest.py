"""A batch from landing file to Parquet: read, validate, write one data file per day plus the rejects."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from .. import native
from . import batches, failpoints, storage
from .batches import BatchRegistration
from .errors import InvalidLandingFileError, LandingFileChangedError
from .records import ParsedBatch, parse_file
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
    engine: str = "native"  # which implementation converted the batch: native (Rust) or python (oracle)

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


def check_unchanged(registration: BatchRegistration) -> None:
    """Refuse a landing file (or NPY sidecar) that changed since its batch was registered."""
    pairs = [(registration.uri, registration.etag)]
    if registration.sidecar_uri is not None:
        pairs.append((registration.sidecar_uri, registration.sidecar_etag or ""))
    for uri, etag in pairs:
        current = storage.stat(uri)
        if current.etag != etag:
            raise LandingFileChangedError(
                f"landing file {uri} changed since batch {registration.batch_id} was registered "
                f"(etag {etag} -> {current.etag}); the new content is picked up as a new batch"
            )


def _local_copy(uri: str, tmp: str, name: str) -> str:
    """A path on this machine holding `uri`'s bytes: the file itself when local, else a streamed download."""
    local = storage.local_path(uri)
    if local is not None:
        return local
    dest = os.path.join(tmp, name)
    storage.download(uri, dest)
    return dest


@contextmanager
def local_landing(registration: BatchRegistration) -> Iterator[tuple[str, str | None]]:
    """The landing file (and NPY sidecar) as local paths, for as long as the block runs."""
    check_unchanged(registration)
    if registration.format == "npy" and registration.sidecar_uri is None:
        raise InvalidLandingFileError(
            f"{registration.uri}: no sidecar with the ids and timestamps; upload "
            f"{' or '.join(batches.sidecar_keys(registration.key))} before the .npy file"
        )
    with tempfile.TemporaryDirectory(prefix="nextesy-") as tmp:
        name = registration.key.rsplit("/", 1)[-1]
        path = _local_copy(registration.uri, tmp, name)
        sidecar = None
        if registration.sidecar_uri is not None:
            sidecar = _local_copy(registration.sidecar_uri, tmp, registration.sidecar_uri.rsplit("/", 1)[-1])
        yield path, sidecar


@dataclass(frozen=True)
class LandingInfo:
    size: int
    sha256: str
    records: int
    damaged: str | None  # why reading stopped early, if it did


def inspect_landing(registration: BatchRegistration) -> LandingInfo:
    """Size, checksum and record count of a landing file, read as a stream (memory stays small)."""
    with local_landing(registration) as (path, sidecar):
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        try:
            records, damaged = native.count_records(path, registration.format, sidecar)
        except InvalidLandingFileError as exc:
            records, damaged = 0, str(exc)
        return LandingInfo(os.path.getsize(path), digest, records, damaged)


def row_group_rows(settings: Settings) -> int:
    """Rows per Parquet row group for the configured target size."""
    return max(1, settings.row_group_bytes // (settings.dims * 4 + 64))


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


def split_by_day(parsed: ParsedBatch, table: pa.Table) -> Iterator[tuple[str, pa.Table]]:
    """The good rows of `parsed` (as `table`) cut by day(ts): one `YYYY-MM-DD` label and part per day."""
    days = np.asarray(parsed.ts_micros, dtype=np.int64) // _DAY_MICROS
    for day in np.unique(days):
        label = datetime.fromtimestamp(int(day) * 86_400, UTC).strftime("%Y-%m-%d")
        yield label, table.take(np.flatnonzero(days == day))


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
    Parquet file per day, and its rejects beside the batch; store and return the manifest.

    The native engine does the work; the Python oracle does it when columns are promoted out of the
    payload (NEXTESY_EXTRA_COLUMNS), which the engine does not do yet.
    """
    started = time.perf_counter()
    batch_id = registration.batch_id
    now = datetime.now(UTC)
    with local_landing(registration) as (path, sidecar), tempfile.TemporaryDirectory(prefix="nextesy-") as tmp:
        manifest = BatchManifest(
            batch_id=batch_id,
            source_uri=registration.uri,
            format=registration.format,
            input_bytes=os.path.getsize(path),
            rows_in=0,
            rows_good=0,
            rows_rejected=0,
            reasons={},
        )
        if settings.extra_columns:
            manifest.engine = "python"
            _convert_with_python(settings, path, sidecar, registration.format, table_location, manifest, now)
        else:
            _convert_with_engine(settings, path, sidecar, registration.format, table_location, manifest, now, tmp)
    manifest.duration_s = round(time.perf_counter() - started, 3)
    storage.write_bytes(manifest_uri(settings, batch_id), manifest.to_json())
    return manifest


def _rejects_uri(settings: Settings, batch_id: str) -> str:
    return storage.join(settings.batches_uri, batch_id, "rejects.parquet")


def _convert_with_engine(
    settings: Settings,
    path: str,
    sidecar: str | None,
    fmt: str,
    table_location: str,
    manifest: BatchManifest,
    now: datetime,
    tmp: str,
) -> None:
    batch_id = manifest.batch_id
    local_data = storage.local_path(storage.join(table_location, "data"))
    rejects_uri = _rejects_uri(settings, batch_id)
    local_rejects = storage.local_path(rejects_uri)
    result = native.convert_file(
        path,
        fmt,
        local_data or os.path.join(tmp, "data"),
        local_rejects or os.path.join(tmp, "rejects.parquet"),
        dims=settings.dims,
        batch_id=batch_id,
        ingested_at_us=int(now.timestamp() * 1_000_000),
        default_model=settings.default_model,
        raw_limit=settings.raw_limit,
        row_group_rows=row_group_rows(settings),
        sidecar=sidecar,
    )
    manifest.rows_in = result.rows_in
    manifest.rows_good = result.rows_good
    manifest.rows_rejected = result.rows_rejected
    manifest.reasons = result.reasons
    manifest.norm_min, manifest.norm_mean, manifest.norm_max = result.norm_min, result.norm_mean, result.norm_max
    for file in result.data_files.to_pylist():
        uri = data_file_uri(table_location, file["day"], batch_id)
        if local_data is None:
            storage.upload(file["path"], uri)
        manifest.data_files.append(DataFileInfo(uri=uri, day=file["day"], rows=file["rows"], bytes=file["bytes"]))
        failpoints.hit("ingest.after_data_file")
    if result.rejects_path is not None:
        if local_rejects is None:
            storage.upload(result.rejects_path, rejects_uri)
        manifest.rejects_uri = rejects_uri


def _convert_with_python(
    settings: Settings,
    path: str,
    sidecar: str | None,
    fmt: str,
    table_location: str,
    manifest: BatchManifest,
    now: datetime,
) -> None:
    batch_id = manifest.batch_id
    parsed = parse_file(
        path, fmt, settings.dims, settings.default_model, settings.raw_limit, settings.extra_columns, sidecar
    )
    manifest.rows_in = parsed.rows_in
    manifest.rows_good = parsed.rows_good
    manifest.rows_rejected = len(parsed.rejects)
    manifest.reasons = dict(Counter(str(r.reason) for r in parsed.rejects))
    if parsed.rows_good:
        manifest.norm_min = float(parsed.norms.min())
        manifest.norm_mean = float(parsed.norms.mean())
        manifest.norm_max = float(parsed.norms.max())
        table = _embeddings_table(parsed, batch_id, now, settings.extra_columns)
        for label, part in split_by_day(parsed, table):
            uri = data_file_uri(table_location, label, batch_id)
            size = write_parquet(part, uri, row_group_rows(settings))
            manifest.data_files.append(DataFileInfo(uri=uri, day=label, rows=part.num_rows, bytes=size))
            failpoints.hit("ingest.after_data_file")
    if parsed.rejects:
        manifest.rejects_uri = _rejects_uri(settings, batch_id)
        write_parquet(_rejects_table(parsed, batch_id, now), manifest.rejects_uri, 65_536)


def read_rejects(manifest: BatchManifest) -> pa.Table:
    if manifest.rejects_uri is None:
        return QUARANTINE_ARROW.empty_table()
    fs, path = storage.resolve(manifest.rejects_uri)
    return pq.read_table(path, filesystem=fs, schema=QUARANTINE_ARROW)
