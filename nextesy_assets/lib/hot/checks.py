"""What the hot index's checks measure: parity with the table, recall against exact search, staleness."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .engine import exact_search, normalise
from .search import HotIndex, from_us
from .segments import Manifest, Segment
from .update import live_files

if TYPE_CHECKING:
    from pyiceberg.table import Table


@dataclass(frozen=True)
class Parity:
    snapshot_id: int | None
    table_rows: int
    index_rows: int
    table_files: int
    index_files: int
    missing_files: int
    extra_files: int

    @property
    def ok(self) -> bool:
        return self.table_rows == self.index_rows and not self.missing_files and not self.extra_files


def parity(table: Table, index: HotIndex) -> Parity:
    """Rows of the window in the table (from file metadata, no data read) against vectors in the index."""
    manifest = index.manifest
    if manifest.source_snapshot_id is None:
        return Parity(None, 0, index.rows, 0, 0, 0, 0)
    live = live_files(table, manifest.source_snapshot_id, manifest.window_start)
    indexed = set(manifest.files)
    return Parity(
        snapshot_id=manifest.source_snapshot_id,
        table_rows=sum(rows for _, rows in live.values()),
        index_rows=index.rows,
        table_files=len(live),
        index_files=len(indexed),
        missing_files=len(set(live) - indexed),
        extra_files=len(indexed - set(live)),
    )


@dataclass(frozen=True)
class Recall:
    recall: float
    queries: int
    k: int


def recall_at_k(index: HotIndex, k: int = 10, sample: int = 100, seed: int = 0) -> Recall:
    """Mean recall@k of the index's answers against an exact scan, on stored vectors used as queries."""
    rng = np.random.default_rng(seed)
    by_model: dict[str, list[Segment]] = {}
    for segment in index.segments:
        by_model.setdefault(segment.info.model, []).append(segment)
    found, asked, queries = 0, 0, 0
    for model, segments in sorted(by_model.items()):
        live = [s.live_positions() for s in segments]
        starts = np.cumsum([0] + [len(rows) for rows in live])
        if starts[-1] == 0:
            continue
        picks = rng.choice(starts[-1], size=min(starts[-1], max(1, sample // len(by_model))), replace=False)
        owner = np.searchsorted(starts, picks, side="right") - 1
        asks = np.stack([segments[s].vectors[live[s][p - starts[s]]] for s, p in zip(owner, picks, strict=True)])
        for query, truth in zip(asks, exact_keys(segments, normalise(asks), k), strict=True):
            got = {(h.id, h.ts.isoformat()) for h in index.search(query, k, model)}
            found += len(truth & got)
            asked += len(truth)
            queries += 1
    return Recall(recall=found / asked if asked else 1.0, queries=queries, k=k)


def exact_keys(segments: list[Segment], queries: np.ndarray, k: int, chunk: int = 65_536) -> list[set[tuple[str, str]]]:
    """The (id, ts) of each query's exact top `k` over the segments' live rows, read a chunk of rows at a time
    (no copy of the model's vectors; ties go to the earlier segment and row, as `exact_search` breaks them)."""
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # scores, segment, row: queries x k each
    for number, segment in enumerate(segments):
        for start in range(0, len(segment.ids), chunk):
            stop = min(start + chunk, len(segment.ids))
            allowed = None if segment.live is None else segment.live[start:stop]
            scores, labels = exact_search(segment.vectors[start:stop], queries, k, allowed)
            found.append((scores, np.full_like(labels, number), np.where(labels >= 0, labels + start, -1)))
    scores, owners, rows = (np.concatenate(parts, axis=1) for parts in zip(*found, strict=True))
    keys = []
    for q in range(len(queries)):
        order = np.lexsort((rows[q], owners[q], -scores[q]))
        best = [(owners[q, i], rows[q, i]) for i in order[:k] if rows[q, i] >= 0]
        keys.append({(segments[s].ids[r], from_us(int(segments[s].ts_us[r])).isoformat()) for s, r in best})
    return keys


@dataclass(frozen=True)
class Staleness:
    snapshots: int
    seconds: float


def staleness(table: Table, manifest: Manifest) -> Staleness:
    """Snapshots and seconds between the table's current snapshot and the one an index manifest reflects."""
    table.refresh()
    current = table.current_snapshot()
    if current is None or current.snapshot_id == manifest.source_snapshot_id:
        return Staleness(0, 0.0)
    since = manifest.source_snapshot_ms or 0
    behind = sum(1 for s in table.metadata.snapshots if s.timestamp_ms > since)
    return Staleness(behind, max(0.0, (current.timestamp_ms - since) / 1000))
