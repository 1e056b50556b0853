"""Orphan files: what failed or killed commits left in a table's location, removed once old enough.

Step 6 of the replication protocol. pyiceberg writes a commit's data files, manifests, manifest list and
metadata file before the catalog points at them; a commit that fails or is killed leaves them behind,
and nothing reads them. A file is an orphan when no snapshot, no metadata file of the table's history
and no pending batch references it; it is removed only once it is older than the safety window, so a
commit still in flight (whose files are not referenced yet) is never touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from . import iceberg, ingest, storage
from .errors import ConfigurationError, TerminalError
from .settings import Settings

if TYPE_CHECKING:
    from pyiceberg.table import Table

MIN_AGE_VAR = "NEXTESY_SWEEP_MIN_AGE_H"
DEFAULT_MIN_AGE = timedelta(hours=72)


def min_age_from_env() -> timedelta:
    raw = os.environ.get(MIN_AGE_VAR)
    if not raw:
        return DEFAULT_MIN_AGE
    try:
        hours = float(raw)
    except ValueError:
        raise ConfigurationError(f"{MIN_AGE_VAR} must be a number of hours, got {raw!r}") from None
    if hours < 0:
        raise ConfigurationError(f"{MIN_AGE_VAR} must not be negative, got {raw!r}")
    return timedelta(hours=hours)


@dataclass
class Sweep:
    """What one sweep of one table found and did."""

    table: str
    listed: int = 0
    referenced: int = 0
    removed: list[str] = field(default_factory=list)
    too_young: list[str] = field(default_factory=list)
    bytes_removed: int = 0


class UnsafeSweepError(TerminalError):
    """The listing of a table's location does not look like that table: nothing is removed."""


def referenced_files(table: Table) -> set[str]:
    """Every file the table's metadata can reach: metadata files of its history, manifest lists,
    manifests (live or not) and the data files they name, statistics files."""
    io = table.io
    metadata = table.metadata
    files = {table.metadata_location, *(entry.metadata_file for entry in metadata.metadata_log)}
    files |= {stats.statistics_path for stats in metadata.statistics}
    files |= {stats.statistics_path for stats in metadata.partition_statistics}
    for snapshot in metadata.snapshots:
        files.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            files.add(manifest.manifest_path)
            files.update(
                entry.data_file.file_path for entry in manifest.fetch_manifest_entry(io, discard_deleted=False)
            )
    return files


def sweep_table(
    table: Table, min_age: timedelta, keep: set[str] | frozenset[str] = frozenset(), now: datetime | None = None
) -> Sweep:
    """Remove the table's orphans older than `min_age`; `keep` names files that must stay anyway."""
    now = now or datetime.now(UTC)
    location = table.location().rstrip("/")
    referenced = referenced_files(table) | set(keep)
    result = Sweep(table=f"{table.catalog.name}:{'.'.join(table.name())}")
    objects = [obj for page in storage.list_objects(location) for obj in page]
    result.listed = len(objects)
    if table.metadata_location not in {obj.uri for obj in objects}:
        # Paths spelled differently from the listing (another scheme, a relative path) would make every
        # file look unreferenced: refuse rather than delete a live table.
        raise UnsafeSweepError(
            f"table {result.table}: its metadata file {table.metadata_location} is not among the {len(objects)} "
            f"objects listed under {location}; not sweeping"
        )
    for obj in objects:
        if obj.uri in referenced:
            result.referenced += 1
        elif obj.modified is None or now - obj.modified < min_age:
            result.too_young.append(obj.uri)
        else:
            storage.delete(obj.uri)
            result.removed.append(obj.uri)
            result.bytes_removed += obj.size
    return result


def pending_batch_files(settings: Settings, table: Table) -> set[str]:
    """Data files written for batches that are not committed yet: their commit will reference them."""
    committed = set(iceberg.committed_batches(table))
    files: set[str] = set()
    for page in storage.list_objects(settings.batches_uri):
        for obj in page:
            batch_id, _, name = obj.key.partition("/")
            if name != "manifest.json" or batch_id in committed:
                continue
            manifest = ingest.load_manifest(settings, batch_id)
            if manifest is not None:
                files.update(f.uri for f in manifest.data_files)
                if manifest.rejects_uri:
                    files.add(manifest.rejects_uri)
    return files


def sweep(settings: Settings, min_age: timedelta | None = None, now: datetime | None = None) -> list[Sweep]:
    """Sweep the source table, the quarantine and the replica."""
    from . import replication

    min_age = min_age_from_env() if min_age is None else min_age
    source = iceberg.embeddings_table(settings)
    quarantine = iceberg.ensure_quarantine_table(iceberg.source_catalog(settings), settings.warehouse_uri)
    replica = replication.ensure_replica_table(settings, source)
    return [
        sweep_table(source, min_age, pending_batch_files(settings, source), now),
        sweep_table(quarantine, min_age, now=now),
        sweep_table(replica, min_age, now=now),
    ]
