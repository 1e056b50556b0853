"""Answering a similarity query: from the hot index's segments, or exactly from the Iceberg table (cold)."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import NextesyError
from .engine import EXACT_BELOW, HNSW_EF_SEARCH, FaissHnsw, exact_search, normalise
from .segments import EPOCH, MANIFEST, US_PER_DAY, Manifest, Segment, day_of, load_segment, read_manifest

if TYPE_CHECKING:
    from pyiceberg.table import Table

# FAISS's walk through a graph with rows it may not answer (dead rows of evicted or replaced days, rows a
# filter leaves out) spends part of its breadth on them: it is widened by the segment's stored/allowed ratio,
# at most this much (MAX_DEAD_SHARE 0.5 keeps the dead rows' part within 2). The native walk's breadth counts
# only the rows it may answer (`breadth_counts_allowed`), so it is not widened.
MAX_EFFORT = 2.0
# A segment holding at least this share of a query's candidate rows is walked at full breadth, one holding
# less (the delta beside a main graph) proportionally less, never below the re-rank depth: its share of the
# best k is about its share of the rows.
SHARE_AT_FULL_EFFORT = 0.3
# An unchanged-looking manifest file is still read again after this long: a file system with coarse times
# could give a new manifest the inode, time and size of the one it replaced.
MANIFEST_READ_AT_LEAST_EVERY_S = 60.0


class QueryError(NextesyError):
    """A query that cannot be answered as asked; `status` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class Hit(NamedTuple):
    """One answer (a tuple: made ten times a query, it costs a tenth of a frozen dataclass)."""

    id: str
    score: float
    ts: datetime
    source: str | None


def to_us(moment: datetime) -> int:
    return int((moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1_000_000)


def from_us(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1_000_000, UTC)


def _hits(segment: Segment, scores: np.ndarray, labels: np.ndarray, exclude_id: str | None) -> list[Hit]:
    """The answers of a segment's search (best first, -1 labels padding the end), each column read for all
    of them at once."""
    if len(labels) and labels[-1] < 0:
        found = labels >= 0
        scores, labels = scores[found], labels[found]
    columns = (segment.ids.take(labels), scores.tolist(), segment.ts_us[labels].tolist(), segment.sources_of(labels))
    hits = [Hit(id_, score, from_us(us), source) for id_, score, us, source in zip(*columns, strict=True)]
    return hits if exclude_id is None else [h for h in hits if h.id != exclude_id]


def _top(hits: list[Hit], k: int) -> list[Hit]:
    return sorted(hits, key=lambda h: (-h.score, h.id, h.ts))[:k]


class HotIndex:
    """The index as the query service holds it: the segments of one manifest version, swapped whole."""

    def __init__(self, root: Path, ef_search: int = HNSW_EF_SEARCH, walk: str = "native") -> None:
        self.root = root
        self.ef_search = ef_search  # the graph walks' breadth (NEXTESY_HOT_EF_SEARCH)
        self.walk = walk  # who walks the graphs (NEXTESY_HOT_WALK)
        self.manifest = Manifest()
        self.segments: list[Segment] = []
        self._lock = threading.Lock()
        self._read: tuple[int, int, int, int] | None = None  # the manifest file last read: inode, times, size
        self._read_at = 0.0
        self.refresh()

    def refresh(self) -> bool:
        """Load a newer manifest if there is one (reusing unchanged segments); True if it changed.

        The manifest file is read only when it is another file than last time: an update replaces it whole
        (os.replace). A service checks every second, and a window's manifest lists every data file it
        indexed: a week of 5-minute batches is about 270 KiB, 0.9 ms of JSON holding the GIL, which the
        requests in flight would wait for. (It is read again once a minute whatever its stat says.)
        """
        with self._lock:
            try:
                stat = os.stat(self.root / MANIFEST)
            except FileNotFoundError:
                return False
            seen = (stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)
            now = time.monotonic()
            if seen == self._read and now - self._read_at < MANIFEST_READ_AT_LEAST_EVERY_S:
                return False
            manifest = read_manifest(self.root)
            if manifest is None or manifest.version == self.manifest.version:
                self._read, self._read_at = seen, now
                return False
            loaded = {s.info.name: s for s in self.segments}
            segments = [
                loaded[info.name].with_info(info, manifest.window_start)
                if info.name in loaded
                else load_segment(self.root, info, manifest.dims, manifest.window_start)
                for info in manifest.segments
            ]
            for segment in segments:
                if isinstance(segment.index, FaissHnsw):
                    segment.index.ef_search = self.ef_search
                    segment.index.native_walk = self.walk == "native"
            # One assignment each: a query running now keeps the lists it started with.
            self.segments, self.manifest = segments, manifest
            self._read, self._read_at = seen, now
            return True

    @property
    def rows(self) -> int:
        return sum(s.live_rows for s in self.segments)

    @property
    def models(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.segments:
            out[s.info.model] = out.get(s.info.model, 0) + s.live_rows
        return out

    @property
    def window_start(self) -> datetime:
        return datetime.combine(day_of(self.manifest.window_start), datetime.min.time(), UTC)

    def covers(self, since: datetime | None, until: datetime | None = None) -> bool:
        """Whether a query's time range lies inside the window (no `since` means the window's start)."""
        if self.manifest.source_snapshot_id is None:
            return False
        if since is not None:
            return since >= self.window_start
        return until is None or until > self.window_start

    def lookup(self, id_: str, model: str | None) -> tuple[str, np.ndarray] | None:
        """(model, vector) of the newest stored row with this id."""
        best: tuple[int, str, np.ndarray] | None = None
        for segment in self.segments:
            if model is not None and segment.info.model != model:
                continue
            matches = segment.ids.equal(id_)
            if segment.live is not None:
                matches &= segment.live
            for row in np.flatnonzero(matches):
                if best is None or segment.ts_us[row] > best[0]:
                    best = (int(segment.ts_us[row]), segment.info.model, segment.vectors[row])
        return None if best is None else (best[1], best[2])

    def search(
        self,
        vector: np.ndarray,
        k: int,
        model: str,
        source: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        exclude_id: str | None = None,
    ) -> list[Hit]:
        segments = self.segments
        since_us = to_us(since) if since else None
        until_us = to_us(until) if until else None
        query = normalise(vector.reshape(1, -1))
        want = k + (1 if exclude_id is not None else 0)
        hits: list[Hit] = []
        searched = []
        for segment in segments:
            if segment.info.model != model:
                continue
            if (since_us is not None and (segment.info.last_day + 1) * US_PER_DAY <= since_us) or (
                until_us is not None and segment.info.first_day * US_PER_DAY >= until_us
            ):
                continue
            allowed = segment.mask(source, since_us, until_us)
            # With no filter beyond the segment's own, the count is known: no pass over a million flags.
            allowed_rows = segment.live_rows if allowed is segment.live else int(allowed.sum())  # type: ignore[union-attr]
            if allowed_rows:
                searched.append((segment, allowed, allowed_rows))
        total = sum(rows for _, _, rows in searched)
        for segment, allowed, allowed_rows in searched:
            # A filter of the query's own that keeps few rows is answered exactly; the segment's own mask (at
            # least half its rows live) is left to the graph walk.
            if allowed is not None and allowed is not segment.live and allowed_rows < EXACT_BELOW:
                scores, labels = exact_search(segment.vectors, query, want, allowed)
            else:
                # Wider over rows it may not answer, narrower over a graph holding a small share of them (the delta).
                share = min(1.0, allowed_rows / (total * SHARE_AT_FULL_EFFORT))
                counts_allowed = getattr(segment.index, "breadth_counts_allowed", False)
                widen = 1.0 if counts_allowed else min(MAX_EFFORT, len(segment.ids) / allowed_rows)
                effort = widen * share
                scores, labels = segment.index.search(query, want, allowed, effort=effort)
            hits += _hits(segment, scores[0], labels[0], exclude_id)
        return _top(hits, k)


def _cold_filter(model: str, source: str | None, since: datetime | None, until: datetime | None, id_: str | None):  # type: ignore[no-untyped-def]
    from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan

    expr = EqualTo("model", model) if id_ is None else EqualTo("id", id_)
    if id_ is not None and model:
        expr = And(expr, EqualTo("model", model))
    if source is not None:
        expr = And(expr, EqualTo("source", source))
    if since is not None:
        expr = And(expr, GreaterThanOrEqual("ts", since.astimezone(UTC).isoformat()))
    if until is not None:
        expr = And(expr, LessThan("ts", until.astimezone(UTC).isoformat()))
    return expr


def cold_scan(
    table: Table, model: str, source: str | None, since: datetime | None, until: datetime | None, snapshot_id: int
) -> pa.Table:
    """Rows of the table's matching partitions (pruned by day(ts)), at one snapshot."""
    return table.scan(
        row_filter=_cold_filter(model, source, since, until, None),
        selected_fields=("id", "vector", "ts", "source"),
        snapshot_id=snapshot_id,
    ).to_arrow()


def cold_lookup(table: Table, id_: str, model: str | None, snapshot_id: int) -> tuple[str, np.ndarray] | None:
    rows = table.scan(
        row_filter=_cold_filter(model or "", None, None, None, id_),
        selected_fields=("model", "vector", "ts"),
        snapshot_id=snapshot_id,
    ).to_arrow()
    if rows.num_rows == 0:
        return None
    newest = int(np.argmax(pc.cast(rows["ts"], pa.int64()).to_numpy()))
    return str(rows["model"][newest]), np.asarray(rows["vector"][newest].as_py(), dtype=np.float32)


def cold_search(
    table: Table,
    snapshot_id: int,
    vector: np.ndarray,
    k: int,
    model: str,
    source: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    exclude_id: str | None = None,
) -> list[Hit]:
    """The exact answer from the table itself: every matching row scored, the best k kept."""
    rows = cold_scan(table, model, source, since, until, snapshot_id)
    if exclude_id is not None:
        rows = rows.filter(pc.not_equal(rows["id"], exclude_id))
    if rows.num_rows == 0:
        return []
    dims = len(vector)
    flat = pc.list_flatten(rows["vector"].combine_chunks()).to_numpy(zero_copy_only=False)
    data = normalise(flat.astype(np.float32).reshape(-1, dims))
    scores, labels = exact_search(data, normalise(vector.reshape(1, -1)), k)
    ids, ts, sources = rows["id"].to_pylist(), rows["ts"].to_pylist(), rows["source"].to_pylist()
    return _top(
        [Hit(ids[i], float(s), ts[i], sources[i]) for s, i in zip(scores[0], labels[0], strict=True) if i >= 0], k
    )


def day_floor(moment: datetime) -> int:
    return (moment.astimezone(UTC).date() - EPOCH).days
