"""The replica protocol: copy the source's live data files, verify every copy, then commit once.

See "Replication protocol" in the design: the unit of replication is the set of live data files of a
source snapshot, never a replay of snapshot ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import google_crc32c
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from . import failpoints, iceberg, storage
from . import properties as props
from .breaker import BREAKER, store_of
from .errors import ReplicaVerificationError
from .settings import Settings

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

_CHUNK = 8 * 1024 * 1024
_COPY_WORKERS = 8


@dataclass
class ReplicationResult:
    """What one replication run did; every number is also Dagster metadata."""

    source_snapshot_id: int | None
    replica_snapshot_id: int | None
    up_to_date: bool
    files_copied: int = 0
    files_reused: int = 0
    files_removed: int = 0
    bytes_copied: int = 0
    rows: int = 0
    lag_snapshots: int = 0
    lag_seconds: float = 0.0
    duration_s: float = 0.0
    verified: dict[str, int] = field(default_factory=dict)

    def egress_usd(self, usd_per_gb: float) -> float:
        return self.bytes_copied / 1e9 * usd_per_gb


def _stream_copy(src_uri: str, dst_uri: str) -> tuple[int, int]:
    """Copy bytes and return (size, CRC32C of the source bytes as read)."""
    return BREAKER.call(store_of(dst_uri), lambda: BREAKER.call(store_of(src_uri), lambda: _copy(src_uri, dst_uri)))


def _copy(src_uri: str, dst_uri: str) -> tuple[int, int]:
    src_fs, src_path = storage.resolve(src_uri)
    dst_fs, dst_path = storage.resolve(dst_uri)
    storage.ensure_parent(dst_fs, dst_path)
    checksum = google_crc32c.Checksum()
    size = 0
    with (
        src_fs.open_input_stream(src_path, compression=None) as source,
        dst_fs.open_output_stream(dst_path, compression=None) as target,
    ):
        while chunk := source.read(_CHUNK):
            checksum.update(chunk)
            target.write(chunk)
            size += len(chunk)
    return size, int.from_bytes(checksum.digest(), "big")


def copy_verified(src_uri: str, dst_uri: str) -> tuple[int, int, bool]:
    """Make `dst_uri` a verified copy of `src_uri`: returns (bytes copied, crc32c, whether it copied).

    A target already holding the same bytes (same checksum) is kept: a resumed run does no work twice.
    A copy whose checksum differs from the source's is deleted and retried, never kept.
    """
    if storage.exists(dst_uri):
        expected = storage.crc32c(src_uri)
        if storage.crc32c(dst_uri) == expected:
            return 0, expected, False
    for attempt in Retrying(
        retry=retry_if_exception_type(ReplicaVerificationError),
        wait=wait_random_exponential(multiplier=0.1, max=2),
        stop=stop_after_attempt(3),
        reraise=True,
    ):
        with attempt:
            size, expected = _stream_copy(src_uri, dst_uri)
            actual = storage.crc32c(dst_uri)
            if actual != expected:
                storage.delete(dst_uri)
                raise ReplicaVerificationError(
                    f"copy of {src_uri} to {dst_uri} has crc32c {actual:08x}, source has {expected:08x}"
                )
    return size, expected, True


def live_files(table: Table, snapshot_id: int | None = None) -> dict[str, DataFile]:
    """Live data files of a snapshot (default: current), keyed by path relative to the table location."""
    snapshot = table.snapshot_by_id(snapshot_id) if snapshot_id is not None else table.current_snapshot()
    if snapshot is None:
        return {}
    location = table.location().rstrip("/") + "/"
    files: dict[str, DataFile] = {}
    for task in table.scan(snapshot_id=snapshot.snapshot_id).plan_files():
        path = task.file.file_path
        relative = path[len(location) :] if path.startswith(location) else path.rsplit("/", 1)[-1]
        files[relative] = task.file
    return files


def watermark(replica: Table) -> int | None:
    """The source snapshot the replica reflects, from its current snapshot's summary."""
    snapshot = replica.current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return None
    value = snapshot.summary[props.SOURCE_SNAPSHOT_ID]
    return int(value) if value else None


def _relocated(data_file: DataFile, path: str) -> DataFile:
    from pyiceberg.manifest import DataFile

    copy = DataFile(*[data_file[i] for i in range(len(data_file))])
    copy[1] = path  # file_path; every other field (stats, partition, counts) stays the source's
    return copy


def _lag(source: Table, mark: int | None) -> tuple[int, float]:
    current = source.current_snapshot()
    if current is None:
        return 0, 0.0
    behind = 0
    snapshot = current
    while snapshot is not None and snapshot.snapshot_id != mark:
        behind += 1
        snapshot = source.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
    marked = source.snapshot_by_id(mark) if mark is not None else None
    seconds = (current.timestamp_ms - marked.timestamp_ms) / 1000 if marked else 0.0
    return behind, max(0.0, seconds)


def ensure_replica_table(settings: Settings, source: Table) -> Table:
    """The replica table: same schema, partition spec and properties as the source, under the replica URI."""
    catalog = iceberg.replica_catalog(settings)
    catalog.create_namespace_if_not_exists(props.NAMESPACE)
    replica = iceberg.load_or_create(
        catalog,
        (props.NAMESPACE, props.EMBEDDINGS_TABLE),
        schema=source.schema(),
        location=iceberg.table_location(settings.replica_uri, props.EMBEDDINGS_TABLE),
        partition_spec=source.spec(),
        properties=dict(source.properties),
    )
    if replica.schema() != source.schema() or dict(replica.properties) != dict(source.properties):
        # Schema first (protocol step 2): the same columns, added in the same order, get the same ids; the
        # properties carry the name mapping that lets readers find new columns in files without field ids.
        with replica.transaction() as txn:
            if replica.schema() != source.schema():
                with txn.update_schema() as update:
                    update.union_by_name(source.schema())
            txn.set_properties(**source.properties)
    return replica


def replicate(
    settings: Settings,
    on_file: Callable[[str, int], None] | None = None,
) -> ReplicationResult:
    """Bring the replica to the source's current snapshot (steps 1-5 of the protocol)."""
    started = time.perf_counter()
    source = iceberg.embeddings_table(settings)
    current = source.current_snapshot()
    if current is None:
        return ReplicationResult(None, None, up_to_date=True)
    replica = ensure_replica_table(settings, source)
    mark = watermark(replica)
    lag_snapshots, lag_seconds = _lag(source, mark)
    if mark == current.snapshot_id:
        result = ReplicationResult(current.snapshot_id, replica.current_snapshot().snapshot_id, up_to_date=True)
        result.rows = sum(f.record_count for f in live_files(replica).values())
        return result

    wanted = live_files(source, current.snapshot_id)
    present = live_files(replica)
    to_copy = sorted(set(wanted) - set(present))
    to_remove = sorted(set(present) - set(wanted))
    replica_root = replica.location().rstrip("/")
    result = ReplicationResult(current.snapshot_id, None, up_to_date=False)
    result.lag_snapshots, result.lag_seconds = lag_snapshots, lag_seconds

    def copy_one(relative: str) -> tuple[str, int, int, bool]:
        size, crc, copied = copy_verified(wanted[relative].file_path, f"{replica_root}/{relative}")
        failpoints.hit("replica.after_copy")
        if on_file is not None:
            on_file(relative, size)
        return relative, size, crc, copied

    with ThreadPoolExecutor(max_workers=_COPY_WORKERS) as pool:
        for relative, size, crc, copied in pool.map(copy_one, to_copy):
            result.verified[relative] = crc
            result.bytes_copied += size
            result.files_copied += copied
            result.files_reused += not copied

    # Every copy is verified: now, and only now, one atomic replica commit.
    summary = {
        props.SOURCE_SNAPSHOT_ID: str(current.snapshot_id),
        props.SOURCE_SNAPSHOT_TS: str(current.timestamp_ms),
    }
    failpoints.hit("replica.before_commit")
    with (
        replica.transaction() as txn,
        txn.update_snapshot(snapshot_properties=summary).overwrite() as overwrite,
    ):
        for relative in to_remove:
            overwrite.delete_data_file(present[relative])
        for relative in to_copy:
            overwrite.append_data_file(_relocated(wanted[relative], f"{replica_root}/{relative}"))
    result.files_removed = len(to_remove)
    snapshot = replica.current_snapshot()
    result.replica_snapshot_id = snapshot.snapshot_id if snapshot else None
    result.rows = sum(f.record_count for f in wanted.values())
    result.duration_s = round(time.perf_counter() - started, 3)
    return result


@dataclass
class Parity:
    """How the replica compares with the source snapshot it claims to reflect."""

    source_snapshot_id: int | None
    watermark: int | None
    source_rows: int = 0
    replica_rows: int = 0
    source_files: int = 0
    replica_files: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    checksummed: int = 0
    lag_snapshots: int = 0
    lag_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.watermark == self.source_snapshot_id
            and not (self.missing or self.extra or self.mismatched)
            and self.source_rows == self.replica_rows
        )

    def describe(self) -> str:
        if self.ok:
            return (
                f"replica equals source snapshot {self.source_snapshot_id}: "
                f"{self.replica_rows} rows in {self.replica_files} files"
            )
        return (
            f"replica at source snapshot {self.watermark}, source at {self.source_snapshot_id}; "
            f"rows {self.replica_rows}/{self.source_rows}; missing {self.missing[:5]}, extra {self.extra[:5]}, "
            f"mismatched {self.mismatched[:5]}"
        )


def parity(settings: Settings, checksum_sample: int | None = 8) -> Parity:
    """Compare the replica with the source snapshot of its watermark: file set, sizes, row counts, and the
    CRC32C of `checksum_sample` files (all of them when None)."""
    source = iceberg.embeddings_table(settings)
    current = source.current_snapshot()
    replica = ensure_replica_table(settings, source) if current is not None else None
    result = Parity(current.snapshot_id if current else None, watermark(replica) if replica else None)
    if current is None or replica is None:
        return result
    result.lag_snapshots, result.lag_seconds = _lag(source, result.watermark)
    wanted = live_files(source, result.watermark) if result.watermark is not None else {}
    present = live_files(replica)
    result.source_rows = sum(f.record_count for f in live_files(source).values())
    result.replica_rows = sum(f.record_count for f in present.values())
    result.source_files, result.replica_files = len(wanted), len(present)
    result.missing = sorted(set(wanted) - set(present))
    result.extra = sorted(set(present) - set(wanted))
    common = sorted(set(wanted) & set(present))
    for relative in common:
        a, b = wanted[relative], present[relative]
        if (a.file_size_in_bytes, a.record_count) != (b.file_size_in_bytes, b.record_count):
            result.mismatched.append(relative)
    sample = common if checksum_sample is None else common[-checksum_sample:]
    with ThreadPoolExecutor(max_workers=_COPY_WORKERS) as pool:
        crcs = pool.map(
            lambda rel: (rel, storage.crc32c(wanted[rel].file_path), storage.crc32c(present[rel].file_path)), sample
        )
        for relative, a_crc, b_crc in crcs:
            result.checksummed += 1
            if a_crc != b_crc and relative not in result.mismatched:
                result.mismatched.append(relative)
    return result
