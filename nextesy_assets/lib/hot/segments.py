"""The hot index on disk: immutable segments (one model, one day) and a manifest naming the live ones.

A segment is written once and never changed: an update writes new segments and then swaps the
manifest by an atomic rename, so a reader (the query service) always sees a whole version.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .engine import ExactIndex, FaissHnsw, VectorIndex

MANIFEST = "manifest.json"
SEGMENTS = "segments"
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
    day: int  # days since the epoch, as Iceberg's day(ts) partition
    rows: int
    engine: str


@dataclass
class Manifest:
    """What the index holds and which table snapshot it reflects."""

    version: int = 0
    source_snapshot_id: int | None = None
    source_snapshot_ms: int | None = None
    window_days: int = 0
    window_start: int = 0  # first day in the window, days since the epoch
    dims: int = 0
    segments: list[SegmentInfo] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)  # indexed data file -> its day

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.segments)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
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


@dataclass
class Segment:
    """One segment in memory: its ANN index and, row by row, what a result needs."""

    info: SegmentInfo
    index: VectorIndex
    vectors: np.ndarray  # unit vectors, float32
    ids: np.ndarray  # object (str)
    ts_us: np.ndarray  # int64 microseconds since the epoch, UTC
    sources: np.ndarray  # object (str | None)

    def __post_init__(self) -> None:
        # Sources as small integer codes: a source filter over a million rows is one integer compare.
        named = np.asarray(["\0" if v is None else v for v in self.sources.tolist()], dtype=str)
        self.source_names, codes = np.unique(named, return_inverse=True)
        self.source_codes = codes.astype(np.int32)

    def mask(self, source: str | None, since_us: int | None, until_us: int | None) -> np.ndarray | None:
        """Rows that pass the filters, or None when all do (the common case costs nothing)."""
        day_start = self.info.day * US_PER_DAY
        since_us = None if since_us is None or since_us <= day_start else since_us
        until_us = None if until_us is None or until_us >= day_start + US_PER_DAY else until_us
        if source is None and since_us is None and until_us is None:
            return None
        keep = np.ones(len(self.ids), dtype=bool)
        if source is not None:
            found = np.flatnonzero(self.source_names == source)
            keep &= self.source_codes == (found[0] if len(found) else -1)
        if since_us is not None:
            keep &= self.ts_us >= since_us
        if until_us is not None:
            keep &= self.ts_us < until_us
        return None if keep.all() else keep


def build_segment(
    root: Path, name: str, model: str, day: int, vectors: np.ndarray, meta: pa.Table, base: Segment | None = None
) -> Segment:
    """Write a new segment; with `base`, its rows come first and its graph is extended, not rebuilt."""
    dims = vectors.shape[1]
    if base is not None:
        vectors = np.concatenate([base.vectors, vectors])
        meta = pa.concat_tables([meta_table(base), meta])
    rows = len(vectors)
    if rows >= HNSW_FROM_ROWS:
        if isinstance(base, Segment) and isinstance(base.index, FaissHnsw):
            index: VectorIndex = base.index
            index.add(vectors[len(base.vectors) :])
            vectors = index.vectors  # the engine's copy: one in memory, not two
        else:
            index = FaissHnsw(dims)
            index.add(vectors)
        engine = "faiss-hnsw"
    else:
        index, engine = ExactIndex(dims, vectors), "exact"
    path = root / SEGMENTS / name
    path.mkdir(parents=True, exist_ok=True)
    index.save(path)  # both engines write the float32 rows as vectors.npy
    pq.write_table(meta, path / "meta.parquet")
    info = SegmentInfo(name=name, model=model, day=day, rows=rows, engine=engine)
    return _segment(info, index, vectors, meta)


def meta_table(segment: Segment) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(segment.ids, pa.string()),
            "ts_us": pa.array(segment.ts_us, pa.int64()),
            "source": pa.array(segment.sources, pa.string()),
        }
    )


def _segment(info: SegmentInfo, index: VectorIndex, vectors: np.ndarray, meta: pa.Table) -> Segment:
    return Segment(
        info=info,
        index=index,
        vectors=vectors,
        ids=np.asarray(meta["id"].to_pylist(), dtype=object),
        ts_us=meta["ts_us"].to_numpy(),
        sources=np.asarray(meta["source"].to_pylist(), dtype=object),
    )


def load_segment(root: Path, info: SegmentInfo) -> Segment:
    path = root / SEGMENTS / info.name
    # Memory-mapped: a restart does not copy the rows, and processes serving one index share them.
    # (A plain ndarray view of the map: np.memmap's indexing overhead shows at thousands of queries a second.)
    vectors = np.load(path / "vectors.npy", mmap_mode="r").view(np.ndarray)
    dims = vectors.shape[1]
    index: VectorIndex = (
        FaissHnsw.load(path, dims, vectors) if info.engine == "faiss-hnsw" else ExactIndex(dims, vectors)
    )
    return _segment(info, index, vectors, pq.read_table(path / "meta.parquet"))


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
