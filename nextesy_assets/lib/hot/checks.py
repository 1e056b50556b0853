"""What the hot index's checks measure: parity with the table, recall against exact search, staleness."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .engine import exact_search, normalise
from .search import HotIndex, from_us
from .segments import Manifest
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
    by_model: dict[str, list] = {}
    for segment in index.segments:
        by_model.setdefault(segment.info.model, []).append(segment)
    found, asked, queries = 0, 0, 0
    for model, segments in sorted(by_model.items()):
        rows = [(s, s.live_positions()) for s in segments]
        data = np.concatenate([s.vectors[live] for s, live in rows])
        keys = [(s.ids[r], from_us(int(s.ts_us[r])).isoformat()) for s, live in rows for r in live.tolist()]
        picks = rng.choice(len(data), size=min(len(data), max(1, sample // len(by_model))), replace=False)
        for row in picks:
            _, exact = exact_search(data, normalise(data[row : row + 1]), k)
            truth = {keys[label] for label in exact[0] if label >= 0}
            hits = index.search(data[row], k, model)
            got = {(h.id, h.ts.isoformat()) for h in hits}
            found += len(truth & got)
            asked += len(truth)
            queries += 1
    return Recall(recall=found / asked if asked else 1.0, queries=queries, k=k)


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
