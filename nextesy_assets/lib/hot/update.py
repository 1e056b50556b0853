"""Bring the hot index to the table's current snapshot: read only new data files, evict old days.

The unit of change is the set of live data files in the window (as in the replica protocol). A model's
rows are in a main graph and a delta: rows of files the index has not seen go into the delta, which is
linked into the main graph in place once it holds `hot_fold_delta_rows` rows, and all of it built again at
once when the rows linked in since the main graph was built reach a tenth of it; rows of days that left
the window are masked out; a day whose indexed files are no longer live (compaction, rewrite) is re-read
into the delta and its old rows masked. A segment whose dead rows outnumber its live ones is built again
from its live rows.

The new rows are published first, in the delta grown in place; the folds, rebuilds and merges that are due
follow as the next version, so a batch is searchable within seconds even when it sets off minutes of
rebuilding.
"""

from __future__ import annotations

import fcntl
import hashlib
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import iceberg, storage
from ..settings import DEFAULT_HOT_FOLD_DELTA_ROWS, Settings
from .engine import normalise
from .segments import (
    EPOCH,
    US_PER_DAY,
    Manifest,
    SegmentInfo,
    build_segment,
    load_segment,
    meta_table,
    read_manifest,
    sweep,
    write_manifest,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyiceberg.table import Table

# A model's rows are in a main graph, built at once, and a delta graph that takes new batches (a batch into a
# 1M graph costs about 1.4 ms a row to link in, into a small one a fraction of that), so a batch is
# searchable within seconds. A query walks both, the delta less broadly (search.py), and the second walk,
# re-rank and results cost: at 1M x 768, a 95k delta about a third more of the server's CPU per request, a
# 5k one 12-30% more (bench/hot/window.py and http_runs.py). So once the delta holds `hot_fold_delta_rows`
# rows (default 1: after every batch), the update links them into the main graph in place after publishing
# the batch (`fold`: 10k rows into 1.08M in 12-14 s, the graph written again included), and queries walk
# one graph again. Once the rows linked into the main graph since it was built, with the delta's, exceed
# this share of the rows it was built with, all are built again at once: a graph grown in place answers
# worse than one built in one go (200k x 768 given a seventh more in 10 batches: recall@10 0.969 against
# 0.994 at efSearch 88; grown from a seventh in 7 steps: 0.72; 1M grown by 9% in 10k steps beside a 5k
# delta: 0.962, against 0.967 with all 95k in the delta). At 0.1, a 1M window fed 143k rows a day is rebuilt
# about every 17 hours, each time about 6 minutes of both cores (350 s for 1.1M x 768 measured).
MERGE_DELTA_AT = 0.1
# The delta itself is built again at once (cheap while small) when it has grown in place by more than this
# share of the rows it was built with: it then stays within a step of two of a graph built in one go.
GROW_IN_PLACE_UP_TO = 1.0
# Held by the one update that may write the index at a time (flock, beside the manifest).
WRITER_LOCK = ".update.lock"
# A segment is rebuilt from its live rows once more than this share of its rows is dead (days that left the
# window, rows replaced by a re-read): dead rows cost memory and search breadth.
MAX_DEAD_SHARE = 0.5


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
    # Seconds until a version holding every new row was published: before any rebuild or merge the update
    # then does (`duration_s` includes those).
    visible_s: float = 0.0


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


def _segment_name(model: str, snapshot_id: int) -> str:
    digest = hashlib.sha256(model.encode()).hexdigest()[:10]
    return f"{digest}-{snapshot_id}-{uuid.uuid4().hex[:8]}"


def _meta(data: pa.Table, ts_us: np.ndarray, take: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "id": data["id"].take(take).combine_chunks().cast(pa.string()),
            "ts_us": pa.array(ts_us[take], pa.int64()),
            "source": data["source"].take(take).combine_chunks().cast(pa.string()),
        }
    )


def rebuild_due(info: SegmentInfo, days: dict[int, int]) -> bool:
    """Whether a segment with `days` live is built again at once: mostly dead, or grown in place too far."""
    grown = info.rows - info.built_rows
    return info.rows - sum(days.values()) > MAX_DEAD_SHARE * info.rows or grown > GROW_IN_PLACE_UP_TO * info.built_rows


@dataclass
class Carried:
    """A segment under the new window and snapshot: its live rows per day and its replacements."""

    info: SegmentInfo
    days: dict[int, int]
    replaced: list[list[int]]

    @property
    def unchanged(self) -> SegmentInfo:
        return replace(self.info, days=self.days, replaced=self.replaced)


def carry(info: SegmentInfo, first_day: int, redo_days: set[int]) -> tuple[Carried, int]:
    """`info` with the days before `first_day` dropped and the re-read days replaced; and the rows evicted."""
    days: dict[int, int] = {}
    replaced: list[list[int]] = []
    evicted = 0
    for day, count in info.days.items():
        if day < first_day:
            evicted += count
        elif day in redo_days:
            replaced.append([day, info.rows])
        else:
            days[day] = count
    # A replacement of a day that left the window is covered by the window itself.
    replaced = [r for r in info.replaced if r[0] >= first_day] + replaced
    return Carried(info, days, replaced), evicted


def next_version(
    root: Path,
    name: str,
    model: str,
    carried: Carried | None,
    vectors: np.ndarray,
    meta: pa.Table,
    first_day: int,
    dims: int,
) -> SegmentInfo:
    """Write a segment with these rows added: `carried`'s graph extended in place (a rebuild that is then due
    follows in `settle`), or a new one."""
    days = _count_days(dict(carried.days) if carried is not None else {}, meta)
    if carried is None:
        return build_segment(root, name, model, vectors, meta, days)
    base = load_segment(root, carried.unchanged, dims, first_day, serve=False)
    return build_segment(root, name, model, vectors, meta, days, base, carried.replaced)


def _count_days(days: dict[int, int], meta: pa.Table) -> dict[int, int]:
    """`days` (live rows per day) with the rows of `meta` added."""
    for day, count in Counter((meta["ts_us"].to_numpy() // US_PER_DAY).tolist()).items():
        days[int(day)] = days.get(int(day), 0) + count
    return days


def _live_rows(
    root: Path, parts: list[Carried], first_day: int, dims: int
) -> tuple[np.ndarray, pa.Table, dict[int, int]]:
    """The live rows of `parts` in order: their vectors, their meta table, and their live rows per day."""
    chunks, metas, days = [], [], {}
    for part in parts:
        segment = load_segment(root, part.unchanged, dims, first_day, serve=False)
        keep = segment.live_positions()
        chunks.append(segment.vectors[keep])
        metas.append(meta_table(segment).take(keep))
        for day, count in part.days.items():
            days[day] = days.get(day, 0) + count
    return np.concatenate(chunks), pa.concat_tables(metas), days


def merge(
    root: Path,
    name: str,
    model: str,
    parts: list[Carried],
    first_day: int,
    dims: int,
) -> SegmentInfo:
    """One segment built at once from the live rows of `parts`."""
    vectors, meta, days = _live_rows(root, parts, first_day, dims)
    return build_segment(root, name, model, vectors, meta, days)


def fold(root: Path, name: str, model: str, main: Carried, delta: Carried, first_day: int, dims: int) -> SegmentInfo:
    """A new version of the main graph with the delta's live rows linked in place (its rows file appended to)."""
    base = load_segment(root, main.unchanged, dims, first_day, serve=False)
    vectors, meta, days = _live_rows(root, [delta], first_day, dims)
    for day, count in main.days.items():
        days[day] = days.get(day, 0) + count
    return build_segment(root, name, model, vectors, meta, days, base, main.replaced)


def settle(
    root: Path,
    model: str,
    snapshot_id: int,
    main: Carried,
    delta: Carried | None,
    first_day: int,
    dims: int,
    fold_at: int = DEFAULT_HOT_FOLD_DELTA_ROWS,
) -> list[SegmentInfo]:
    """The model's segments after an update: built again at once as one main graph once the rows linked in
    since the main graph was built (the delta's too) exceed MERGE_DELTA_AT of it, or most of it is dead; else
    the delta linked into the main graph once it holds `fold_at` rows; a delta that is mostly dead or has
    doubled in place built again; otherwise both as they are."""
    delta_rows = sum(delta.days.values()) if delta is not None else 0
    linked = main.info.rows - main.info.built_rows + delta_rows
    if rebuild_due(main.info, main.days) or linked > MERGE_DELTA_AT * main.info.built_rows:
        parts = [main] if delta is None else [main, delta]
        return [merge(root, _segment_name(model, snapshot_id), model, parts, first_day, dims)]
    if delta is not None and delta_rows >= fold_at:
        return [fold(root, _segment_name(model, snapshot_id), model, main, delta, first_day, dims)]
    out = [main.unchanged]
    if delta is not None:
        if rebuild_due(delta.info, delta.days):
            out.append(merge(root, _segment_name(model, snapshot_id), model, [delta], first_day, dims))
        else:
            out.append(delta.unchanged)
    return out


def update(
    settings: Settings,
    now: datetime | None = None,
    table: Table | None = None,
    published: Callable[[Manifest], None] | None = None,
) -> UpdateResult:
    """Apply the snapshot diff to the index under `settings.hot_dir`; a repeat with nothing new does nothing.

    `published` is called with each manifest version the update writes: the one holding the new rows, and
    the one after the rebuilds and merges that were due, if any. One update runs at a time: another (a second
    run, another process on the machine) waits on a lock file in the index's directory, then finds the work
    done or does what is left; a writer must never sweep away the segments another is publishing.
    """
    root = Path(settings.hot_dir)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / WRITER_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed, or the process ends
        return _update(settings, root, now, table, published)


def _update(
    settings: Settings,
    root: Path,
    now: datetime | None,
    table: Table | None,
    published: Callable[[Manifest], None] | None,
) -> UpdateResult:
    started = time.perf_counter()
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
    new_paths = sorted(p for p, (day, _) in live.items() if p not in old.files or day in redo_days)

    data = read_files(new_paths, settings.dims)
    vectors = _vectors(data["vector"], settings.dims) if data.num_rows else np.zeros((0, settings.dims), np.float32)
    ts_us = pc.cast(data["ts"], pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy() if data.num_rows else None
    new_rows: dict[str, list[int]] = defaultdict(list)
    if ts_us is not None:
        for row, (model, day) in enumerate(zip(data["model"].to_pylist(), (ts_us // US_PER_DAY).tolist(), strict=True)):
            if day >= first_day:
                new_rows[model].append(row)

    previous: dict[str, list[SegmentInfo]] = defaultdict(list)
    for info in old.segments:
        previous[info.model].append(info)
    # Two steps: every model's new rows go into its delta, grown in place, and that version is published, so
    # a batch is answered within seconds; then the folds, rebuilds and merges that are due (seconds to
    # minutes of both cores) make the next version. Queries are served from the published versions throughout.
    settling: list[tuple[str, Carried, Carried | None]] = []
    evicted = 0
    for model in sorted(set(previous) | set(new_rows)):
        carried: list[Carried] = []
        for info in previous.get(model, []):
            entry, gone = carry(info, first_day, redo_days)
            evicted += gone
            if entry.days:  # a segment with nothing left in the window is dropped
                carried.append(entry)
        # The main graph first: the one built with the most rows; the other is the delta.
        carried.sort(key=lambda c: -c.info.built_rows)
        main, delta = (carried[0] if carried else None), (carried[1] if len(carried) > 1 else None)
        take = np.asarray(new_rows.get(model, []), dtype=np.int64)
        if len(take):
            # New rows start the main graph, or go into the delta.
            name = _segment_name(model, snapshot.snapshot_id)
            chunk, meta = vectors[take], _meta(data, ts_us, take)  # type: ignore[arg-type]
            info = next_version(root, name, model, delta if main else None, chunk, meta, first_day, settings.dims)
            if main is None:
                main = Carried(info, info.days, info.replaced)
            else:
                delta = Carried(info, info.days, info.replaced)
        if main is not None:
            settling.append((model, main, delta))

    manifest = Manifest(
        version=old.version + 1,
        source_snapshot_id=snapshot.snapshot_id,
        source_snapshot_ms=snapshot.timestamp_ms,
        window_days=settings.hot_window_days,
        window_start=first_day,
        dims=settings.dims,
        segments=[c.unchanged for _, main, delta in settling for c in (main, delta) if c is not None],
        files={p: day for p, (day, _) in live.items()},
    )
    write_manifest(root, manifest)
    visible_s = time.perf_counter() - started
    if published is not None:
        published(manifest)
    kept = [s.name for s in manifest.segments]
    settled = [
        info
        for model, main, delta in settling
        for info in settle(
            root, model, snapshot.snapshot_id, main, delta, first_day, settings.dims, settings.hot_fold_delta_rows
        )
    ]
    if [s.name for s in settled] != kept:
        manifest = replace(manifest, version=manifest.version + 1, segments=settled)
        write_manifest(root, manifest)
        if published is not None:
            published(manifest)
    # A reader may still be loading an earlier version: its segments stay until the next update.
    sweep(root, {s.name for s in manifest.segments} | set(kept) | {s.name for s in old.segments})
    return UpdateResult(
        source_snapshot_id=snapshot.snapshot_id,
        previous_snapshot_id=old.source_snapshot_id,
        files_read=len(new_paths),
        rows_added=int(sum(len(rows) for rows in new_rows.values())),
        rows_evicted=evicted,
        segments=len(manifest.segments),
        rows=manifest.rows,
        duration_s=round(time.perf_counter() - started, 3),
        up_to_date=False,
        visible_s=round(visible_s, 3),
    )
