"""The hot index on disk: a model's window in at most two segments (a main graph and a delta), and a
manifest naming the live ones.

Rows of days that left the window, or of days re-read from the table, stay in their segment but are masked
out of every answer, until so many are dead that the segment is rebuilt from its live rows (update.py
decides when segments grow, merge and rebuild).

A segment directory is written once and never changed: an update writes a new version of the segment and
then swaps the manifest by an atomic rename, so a reader (the query service) always sees a whole version.
The float32 rows live in `vectors.f32`, append-only: a new version hard-links its base's file and appends,
so extending a segment writes the new rows and the graph, not every row again (a reader of the old version
maps only its own prefix, which the append leaves as it was).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .engine import ExactIndex, FaissHnsw, VectorIndex, populate

MANIFEST = "manifest.json"
SEGMENTS = "segments"
VECTORS = "vectors.f32"
META = "meta.parquet"
# 2: one segment per model over the window, rows masked by day. An index of an older layout (one segment per
# day) is not read: the next update rebuilds it from the table.
LAYOUT = 2
EPOCH = date(1970, 1, 1)
# Below this many rows a segment is searched exactly: a graph buys nothing at that size.
HNSW_FROM_ROWS = 2_000
US_PER_DAY = 86_400_000_000


def day_of(ordinal: int) -> date:
    """Iceberg's day(ts) partition value (days since the epoch) as a date."""
    return EPOCH + timedelta(days=ordinal)


@dataclass
class SegmentInfo:
    name: str
    model: str
    rows: int  # rows stored, live or dead
    engine: str
    # Live rows per day (days since the epoch, as Iceberg's day(ts) partition); a day that left the window
    # or was replaced is gone from here, its rows dead in the segment.
    days: dict[int, int] = field(default_factory=dict)
    # [day, below]: rows of `day` at positions below `below` were replaced by a re-read of that day.
    replaced: list[list[int]] = field(default_factory=list)
    built_rows: int = 0  # rows when the graph was last built at once; the rest were added to it since

    def __post_init__(self) -> None:
        self.days = {int(day): int(rows) for day, rows in self.days.items()}  # JSON keys are strings

    @property
    def live_rows(self) -> int:
        return sum(self.days.values())

    @property
    def first_day(self) -> int:
        return min(self.days, default=0)

    @property
    def last_day(self) -> int:
        return max(self.days, default=-1)


@dataclass
class Manifest:
    """What the index holds and which table snapshot it reflects."""

    version: int = 0
    layout: int = LAYOUT
    source_snapshot_id: int | None = None
    source_snapshot_ms: int | None = None
    window_days: int = 0
    window_start: int = 0  # first day in the window, days since the epoch
    dims: int = 0
    segments: list[SegmentInfo] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)  # indexed data file -> its day

    @property
    def rows(self) -> int:
        return sum(s.live_rows for s in self.segments)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest | None:
        """The manifest, or None for one of an older layout (rebuilt by the next update)."""
        raw = json.loads(text)
        if raw.get("layout", 1) != LAYOUT:
            return None
        raw["segments"] = [SegmentInfo(**s) for s in raw.get("segments", [])]
        return cls(**raw)


def read_manifest(root: Path) -> Manifest | None:
    try:
        return Manifest.from_json((root / MANIFEST).read_text())
    except FileNotFoundError:
        return None


def write_manifest(root: Path, manifest: Manifest) -> None:
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(manifest.to_json())
    os.replace(tmp, root / MANIFEST)


class Column:
    """A segment's ids kept in Arrow's layout, one buffer and its offsets.

    No Python object per row: building a million of them (and the object array holding them) holds the GIL
    for about 70 ms, which every request in flight in a serving worker would wait for while it loads a new
    segment. One value costs a slice and a decode (about 0.4 us), and a query reads a few.
    """

    def __init__(self, values: pa.Array | pa.ChunkedArray) -> None:
        array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        self.array = array.cast(pa.string())
        if self.array.null_count:
            raise ValueError(f"{self.array.null_count} ids are null: the table's id is required")
        _, offsets, data = self.array.buffers()
        start = self.array.offset
        self._offsets = np.frombuffer(offsets, dtype=np.int32)[start : start + len(self.array) + 1]
        self._data = memoryview(data if data is not None else b"")

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, row: int) -> str:
        offsets = self._offsets
        return str(self._data[offsets[row] : offsets[row + 1]], "utf-8")

    def take(self, rows: np.ndarray) -> list[str]:
        """The values of `rows` (a few: a query's answers)."""
        offsets, data = self._offsets, self._data
        bounds = zip(offsets[rows].tolist(), offsets[rows + 1].tolist(), strict=True)
        return [str(data[a:b], "utf-8") for a, b in bounds]

    def __iter__(self) -> Iterator[str]:
        return iter(self.array.to_pylist())

    def equal(self, value: str) -> np.ndarray:
        """Rows holding `value`, as a boolean mask (Arrow's kernel: no GIL held over the scan)."""
        return pc.equal(self.array, value).to_numpy(zero_copy_only=False)


@dataclass
class Segment:
    """One segment in memory: its ANN index and, row by row, what a result needs."""

    info: SegmentInfo
    index: VectorIndex
    vectors: np.ndarray  # unit vectors, float32, every stored row
    ids: Column
    ts_us: np.ndarray  # int64 microseconds since the epoch, UTC
    sources: pa.Array  # string, a row's source or null; read through the codes below
    # Rows that may be answered (in the window, not replaced), read-only; None when all may.
    live: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Sources as small integer codes (-1: none): a source filter over a million rows is one integer compare.
        encoded = pc.dictionary_encode(self.sources)
        self.source_names = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
        self.source_codes = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int32)
        self.row_days = (self.ts_us // US_PER_DAY).astype(np.int32)
        self.live_rows = len(self.ids) if self.live is None else int(self.live.sum())

    def sources_of(self, rows: np.ndarray) -> list[str | None]:
        """The source of each of `rows` (None where a row has none)."""
        names = self.source_names
        return [None if code < 0 else names[code] for code in self.source_codes[rows].tolist()]

    def with_info(self, info: SegmentInfo, window_start: int) -> Segment:
        """This segment under a newer manifest entry: the same rows, masked for its window and replacements."""
        keep = self.row_days >= window_start
        for day, below in info.replaced:
            keep[:below] &= self.row_days[:below] != day
        out = copy.copy(self)
        out.info = info
        out.live_rows = int(keep.sum())
        if out.live_rows == len(keep):
            out.live = None
        else:
            keep.setflags(write=False)  # never changes, so an engine may build its filter from it once
            out.live = keep
        return out

    def live_positions(self) -> np.ndarray:
        return np.arange(len(self.ids)) if self.live is None else np.flatnonzero(self.live)

    def mask(self, source: str | None, since_us: int | None, until_us: int | None) -> np.ndarray | None:
        """Rows that may be answered and pass the filters, or None when all rows do (costs nothing)."""
        since_us = None if since_us is None or since_us <= self.info.first_day * US_PER_DAY else since_us
        until_us = None if until_us is None or until_us >= (self.info.last_day + 1) * US_PER_DAY else until_us
        if source is None and since_us is None and until_us is None:
            return self.live
        keep = np.ones(len(self.ids), dtype=bool) if self.live is None else self.live.copy()
        if source is not None:
            found = np.flatnonzero(self.source_names == source)
            keep &= self.source_codes == (found[0] if len(found) else -2)  # -1 is a row without a source
        if since_us is not None:
            keep &= self.ts_us >= since_us
        if until_us is not None:
            keep &= self.ts_us < until_us
        return None if keep.all() else keep


def build_segment(
    root: Path,
    name: str,
    model: str,
    vectors: np.ndarray,
    meta: pa.Table,
    days: dict[int, int],
    base: Segment | None = None,
    replaced: list[list[int]] | None = None,
) -> SegmentInfo:
    """Write a segment: with `base`, a new version of it whose rows come first, its graph extended.

    `days` are the live rows per day of the result, `replaced` its [day, below] replacements.
    """
    path = root / SEGMENTS / name
    path.mkdir(parents=True, exist_ok=True)
    dims = vectors.shape[1]
    rows = len(vectors) + (len(base.ids) if base is not None else 0)
    index: VectorIndex | None = None
    if base is not None:
        _extend_vectors(root / SEGMENTS / base.info.name / VECTORS, path / VECTORS, len(base.ids), vectors)
        meta = pa.concat_tables([meta_table(base), meta])
        if isinstance(base.index, FaissHnsw):
            index = base.index
            index.grow(vectors)
    else:
        order = None
        if rows >= HNSW_FROM_ROWS:
            index = FaissHnsw(dims)
            index.grow(vectors)
            # The rows stored near their graph neighbours, which makes every walk of the graph cheaper
            # (FaissHnsw.locality_order); a row's position is only its label within the segment. (A base's
            # rows keep their positions: its replacements are counted by position.)
            order = index.locality_order()
            index.renumber(order)
            meta = meta.take(pa.array(order))
        write_vectors(path, vectors, order)
    if index is None and rows >= HNSW_FROM_ROWS:  # an exact base that reached it: a graph over all its rows
        index = FaissHnsw(dims)
        index.grow(_map_vectors(path, rows, dims))
    if isinstance(index, FaissHnsw):
        index.save(path, with_vectors=False)
    pq.write_table(meta, path / META)
    return SegmentInfo(
        name=name,
        model=model,
        rows=rows,
        engine="faiss-hnsw" if index is not None else "exact",
        days=dict(days),
        replaced=list(replaced or []),
        # A graph built here at once (a first one, or over an exact base that reached HNSW_FROM_ROWS) counts
        # all its rows as built; a grown one keeps its base's count.
        built_rows=rows if base is None or (index is not None and index is not base.index) else base.info.built_rows,
    )


def _extend_vectors(source: Path, target: Path, rows: int, vectors: np.ndarray) -> None:
    """`target` as `source`'s first `rows` rows and then `vectors`: a hard link and an append when it can."""
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: a copy does the same, slower
        shutil.copyfile(source, target)
    with open(target, "r+b") as out:
        # A version built before from the same base (and never published) may have appended to the file.
        out.truncate(rows * vectors.shape[1] * 4)
        out.seek(0, os.SEEK_END)
        np.ascontiguousarray(vectors, dtype=np.float32).tofile(out)


def write_vectors(path: Path, vectors: np.ndarray, order: np.ndarray | None = None) -> None:
    """A segment's rows file under `path`: `vectors` as float32, in `order` if given (100k rows at a time)."""
    with open(path / VECTORS, "wb") as out:
        if order is None:
            np.ascontiguousarray(vectors, dtype=np.float32).tofile(out)
            return
        for start in range(0, len(order), 100_000):
            np.ascontiguousarray(vectors[order[start : start + 100_000]], dtype=np.float32).tofile(out)


def _map_vectors(path: Path, rows: int, dims: int) -> np.ndarray:
    # Memory-mapped: a restart does not copy the rows, and processes serving one index share them. (A
    # plain ndarray view of the map: np.memmap's indexing overhead shows at thousands of queries a second.)
    return np.memmap(path / VECTORS, dtype=np.float32, mode="r", shape=(rows, dims)).view(np.ndarray)


def meta_table(segment: Segment) -> pa.Table:
    return pa.table(
        {
            "id": segment.ids.array,
            "ts_us": pa.array(segment.ts_us, pa.int64()),
            "source": segment.sources,
        }
    )


def load_segment(root: Path, info: SegmentInfo, dims: int, window_start: int, serve: bool = True) -> Segment:
    """A segment as written; `serve=False` (a writer about to extend it) skips what only speeds up searches."""
    path = root / SEGMENTS / info.name
    meta = pq.read_table(path / META)
    # The file may be longer than this version: a later version of the segment appends to the same file.
    vectors = _map_vectors(path, info.rows, dims)
    if serve:
        populate(vectors)
    index: VectorIndex = (
        FaissHnsw.load(path, dims, vectors, huge_pages=serve)
        if info.engine == "faiss-hnsw"
        else ExactIndex(dims, vectors)
    )
    segment = Segment(
        info=info,
        index=index,
        vectors=vectors,
        ids=Column(meta["id"]),
        ts_us=meta["ts_us"].to_numpy(),
        sources=meta["source"].combine_chunks().cast(pa.string()),
    )
    return segment.with_info(info, window_start)


def sweep(root: Path, keep: set[str]) -> int:
    """Remove segment directories no kept manifest names; returns how many."""
    removed = 0
    folder = root / SEGMENTS
    if not folder.exists():
        return 0
    for path in folder.iterdir():
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed
