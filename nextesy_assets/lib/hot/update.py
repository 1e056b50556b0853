"""Bring the hot index to the table's current snapshot: read only new data files, evict old days.

The unit of change is the set of live data files in the window (as in the replica protocol): files
the index has not seen are read and added as new segments, segments of days that left the window
are dropped, and a day whose indexed files are no longer live (compaction, rewrite) is re-read.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import iceberg, storage
from ..settings import Settings
from .engine import normalise
from .segments import (
    EPOCH,
    Manifest,
    build_segment,
    load_segment,
    meta_table,
    read_manifest,
    sweep,
    write_manifest,
)

if TYPE_CHECKING:
    from pyiceberg.table import Table

# A (model, day) with more segments than this is compacted into its largest one.
MAX_SEGMENTS_PER_DAY = 4


@dataclass
class UpdateResult:
    source_snapshot_id: int | None
    previous_snapshot_id: int | None
    files_read: int
    rows_added: int
    rows_evicted: int
    segments: int
    rows: int
    duration_s: float
    up_to_date: bool


def window_start(now: datetime, days: int) -> int:
    """First day (days since the epoch) of a window of `days` days ending today, UTC."""
    return (now.astimezone(UTC).date() - EPOCH).days - (days - 1)


def live_files(table: Table, snapshot_id: int, first_day: int) -> dict[str, tuple[int, int]]:
    """Live data files of the snapshot in days >= first_day: path -> (day, record count).

    The ts filter prunes by the day(ts) partition, so files outside the window are not even listed.
    """
    from pyiceberg.expressions import GreaterThanOrEqual

    since = datetime.combine(EPOCH + timedelta(days=first_day), datetime.min.time(), UTC).isoformat()
    files: dict[str, tuple[int, int]] = {}
    for task in table.scan(row_filter=GreaterThanOrEqual("ts", since), snapshot_id=snapshot_id).plan_files():
        day = int(task.file.partition[0])
        if day >= first_day:
            files[task.file.file_path] = (day, int(task.file.record_count))
    return files


def read_files(paths: list[str], dims: int) -> pa.Table:
    """The columns the index needs from these data files, with the vectors flattened."""
    tables = []
    for path in paths:
        fs, local = storage.resolve(path)
        tables.append(pq.read_table(local, columns=["id", "model", "vector", "ts", "source"], filesystem=fs))
    if not tables:
        return pa.table({"id": [], "model": [], "vector": [], "ts": [], "source": []})
    return pa.concat_tables(tables, promote_options="permissive")


def _vectors(column: pa.ChunkedArray, dims: int) -> np.ndarray:
    flat = pc.list_flatten(column.combine_chunks()).to_numpy(zero_copy_only=False)
    return normalise(flat.astype(np.float32, copy=False).reshape(-1, dims))


def _segment_name(model: str, day: int, snapshot_id: int) -> str:
    digest = hashlib.sha256(model.encode()).hexdigest()[:10]
    return f"{digest}-{day}-{snapshot_id}-{uuid.uuid4().hex[:8]}"


def update(settings: Settings, now: datetime | None = None, table: Table | None = None) -> UpdateResult:
    """Apply the snapshot diff to the index under `settings.hot_dir`; a repeat with nothing new does nothing."""
    started = time.perf_counter()
    root = Path(settings.hot_dir)
    table = table or iceberg.embeddings_table(settings)
    table.refresh()
    snapshot = table.current_snapshot()
    old = read_manifest(root) or Manifest(dims=settings.dims)
    first_day = window_start(now or datetime.now(UTC), settings.hot_window_days)
    if snapshot is None:
        return UpdateResult(None, old.source_snapshot_id, 0, 0, 0, len(old.segments), old.rows, 0.0, True)
    if (
        old.source_snapshot_id == snapshot.snapshot_id
        and old.window_start == first_day
        and old.window_days == settings.hot_window_days
    ):
        return UpdateResult(
            snapshot.snapshot_id, old.source_snapshot_id, 0, 0, 0, len(old.segments), old.rows, 0.0, True
        )

    live = live_files(table, snapshot.snapshot_id, first_day)
    # Days whose indexed files are gone from the table are re-read whole; the rest only gain files.
    redo_days = {day for path, day in old.files.items() if path not in live and day >= first_day}
    kept = [s for s in old.segments if s.day >= first_day and s.day not in redo_days]
    evicted = sum(s.rows for s in old.segments if s not in kept)
    new_paths = sorted(p for p, (day, _) in live.items() if p not in old.files or day in redo_days)

    data = read_files(new_paths, settings.dims)
    vectors = _vectors(data["vector"], settings.dims) if data.num_rows else np.zeros((0, settings.dims), np.float32)
    ts_us = pc.cast(data["ts"], pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy() if data.num_rows else None
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    if ts_us is not None:
        days = ts_us // 86_400_000_000
        for row, (model, day) in enumerate(zip(data["model"].to_pylist(), days.tolist(), strict=True)):
            groups[(model, int(day))].append(row)

    segments = list(kept)
    for (model, day), rows in sorted(groups.items()):
        if day < first_day:
            continue
        take = np.asarray(rows)
        meta = pa.table(
            {
                "id": data["id"].take(take).combine_chunks(),
                "ts_us": pa.array(ts_us[take], pa.int64()),  # type: ignore[index]
                "source": data["source"].take(take).combine_chunks().cast(pa.string()),
            }
        )
        same_day = [s for s in segments if s.model == model and s.day == day]
        chunk, base = vectors[take], None
        if len(same_day) >= MAX_SEGMENTS_PER_DAY:
            # Compaction: the largest segment's graph is extended with the others' rows and the new ones.
            largest = max(same_day, key=lambda s: s.rows)
            base = load_segment(root, largest)
            others = [load_segment(root, s) for s in same_day if s is not largest]
            chunk = np.concatenate([*(o.vectors for o in others), chunk])
            meta = pa.concat_tables([*(meta_table(o) for o in others), meta])
            for info in same_day:
                segments.remove(info)
        built = build_segment(root, _segment_name(model, day, snapshot.snapshot_id), model, day, chunk, meta, base)
        segments.append(built.info)

    files = {p: day for p, (day, _) in live.items()}
    manifest = Manifest(
        version=old.version + 1,
        source_snapshot_id=snapshot.snapshot_id,
        source_snapshot_ms=snapshot.timestamp_ms,
        window_days=settings.hot_window_days,
        window_start=first_day,
        dims=settings.dims,
        segments=sorted(segments, key=lambda s: (s.model, s.day, s.name)),
        files=files,
    )
    write_manifest(root, manifest)
    # A reader may still be loading the previous version: its segments stay until the next update.
    sweep(root, {s.name for s in manifest.segments} | {s.name for s in old.segments})
    return UpdateResult(
        source_snapshot_id=snapshot.snapshot_id,
        previous_snapshot_id=old.source_snapshot_id,
        files_read=len(new_paths),
        rows_added=int(sum(len(r) for (m, d), r in groups.items() if d >= first_day)),
        rows_evicted=evicted,
        segments=len(manifest.segments),
        rows=manifest.rows,
        duration_s=round(time.perf_counter() - started, 3),
        up_to_date=False,
    )
