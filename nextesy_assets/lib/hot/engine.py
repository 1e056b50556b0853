"""One small interface for an ANN index over unit vectors, and its implementations (FAISS HNSW, exact).

Labels are the row positions of a segment (0..n-1); scores are inner products of unit vectors (cosine).
The engine was chosen by measurement (bench/hot): a FAISS HNSW graph (M=32, efConstruction=80) over
8-bit scalar-quantised codes, whose best RERANK candidates are scored again exactly on the float32
vectors. A graph walk is bound by memory traffic: the codes are a quarter of the float32 bytes, and the
re-rank gives back the ordering the quantisation blurs (recall@10 at 200k x 768: 0.92 on the codes
alone, 0.98 re-ranked, at 0.65x the latency of the float32 graph at the same efSearch). FAISS builds and
stores the graph; a query walks it natively (`nextesy_assets.native.sq8_graph`, rust_ext/src/hnsw.rs),
reading FAISS's arrays in place, unless `native_walk` is off (NEXTESY_HOT_WALK=faiss).
"""

from __future__ import annotations

import ctypes
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ..settings import DEFAULT_HOT_EF_SEARCH

HNSW_M = 32
# The breadth of the search that links a new row in, for a graph built at once and for rows added to it.
# At 1M x 768 (bench/hot/graphs.py, the same rows and walk): built at 80, a query at efSearch 88 scores a tenth
# fewer nodes than on the graph built at 40, for recall@10 0.967 against 0.963 (0.85-0.97x the CPU), and the
# build takes 500 s against 430; at 160 the build took 910 s for about as much again (efSearch 72: 0.968 at
# 3,011 nodes, against 3,183 at 80 and efSearch 88). Rows linked into a graph that already has some gain
# more: a 200k graph given a seventh more in 10 batches answered with recall 0.969 at 80, 0.880 at 40 (0.994
# built at once), in the same time (the build is bound by pruning the neighbours' link lists).
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = DEFAULT_HOT_EF_SEARCH  # 88; a server takes NEXTESY_HOT_EF_SEARCH (HotIndex)
# Candidates taken from the graph walk on the codes and scored again on the float32 vectors.
RERANK = 20
# Below this many allowed rows a filtered query is answered exactly: cheaper than a graph walk that
# must skip most of its neighbours, and it never loses recall to a selective filter.
EXACT_BELOW = 20_000
# Linux madvise advice: back a range with 2 MiB pages, and collapse what is already there into them now.
_MADV_HUGEPAGE, _MADV_COLLAPSE, _MADV_POPULATE_READ = 14, 25, 22
_HUGE_PAGE, _PAGE = 1 << 21, 1 << 12


class VectorIndex(Protocol):
    """What the hot tier needs from an ANN engine."""

    def add(self, vectors: np.ndarray) -> None:
        """Append unit vectors; they get the next labels in order."""

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, effort: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, labels) of shape (len(queries), k), best first; label -1 pads a short answer.

        `allowed` is an optional boolean mask over labels: only those rows may be returned. `effort`
        scales an approximate engine's search breadth (1: its setting), for a query that also searches
        other segments; an exact engine ignores it.
        """

    def save(self, path: Path) -> None:
        """Persist to `path` (a file or a directory, as the engine needs)."""

    def __len__(self) -> int: ...


def normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(vectors) == 1:  # a query: one dot product, not NumPy's norm machinery (3 against 16 us)
        norm = float(np.sqrt(np.dot(vectors[0], vectors[0])))
        return vectors / norm if norm else vectors.copy()
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


def exact_search(
    data: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: the reference every ANN answer is judged against, and the cold tier's scan."""
    labels = np.arange(len(data)) if allowed is None else np.flatnonzero(allowed)
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_labels = np.full((len(queries), k), -1, dtype=np.int64)
    if len(labels) == 0:
        return out_scores, out_labels
    # rows @ queries.T, not queries @ rows.T: OpenBLAS takes the first for a matrix-vector product, and for a
    # few queries the second is about 15 times slower (2.5 ms against 0.15 ms over 1,900 x 768 here).
    scores = ((data if allowed is None else data[labels]) @ queries.T).T
    take = min(k, len(labels))
    top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    for row in range(len(queries)):
        # Rows tied with the last one taken are all candidates, so the earlier label wins a tie at the cut as it
        # does above it (argpartition alone keeps any of them).
        near = np.flatnonzero(scores[row] >= scores[row, top[row]].min())
        order = near[np.lexsort((labels[near], -scores[row, near]))][:take]
        out_scores[row, :take] = scores[row, order]
        out_labels[row, :take] = labels[order]
    return out_scores, out_labels


class FaissHnsw:
    """FAISS HNSW over 8-bit codes with an exact float32 re-rank; filters go through an id-selector bitmap.

    The float32 vectors are kept beside the graph (a segment's `vectors.npy`, memory-mapped when loaded,
    so processes serving the same index share one copy in the page cache).
    """

    FILE = "index.faiss"
    VECTORS = "vectors.npy"

    def __init__(self, dims: int, index: object | None = None, vectors: np.ndarray | None = None) -> None:
        import faiss

        self.dims = dims
        if index is None:
            index = faiss.IndexHNSWSQ(dims, faiss.ScalarQuantizer.QT_8bit, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        self._index = index
        self.vectors = np.zeros((0, dims), dtype=np.float32) if vectors is None else vectors
        self.ef_search = HNSW_EF_SEARCH
        # Walk the graph natively (nextesy_assets.native.sq8_graph) rather than through FAISS's search.
        self.native_walk = True
        self._walker: object | None = None
        self._unfiltered: dict[int, object] = {}
        self._standing: tuple[np.ndarray, np.ndarray, object, dict[int, object]] | None = None

    def add(self, vectors: np.ndarray) -> None:
        if not len(vectors):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.grow(vectors)
        self.vectors = vectors if not len(self.vectors) else np.concatenate([self.vectors, vectors])

    def grow(self, vectors: np.ndarray) -> None:
        """Add to the graph only: the caller keeps the float32 rows (a segment appends them to its file)."""
        if not len(vectors):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not self._index.is_trained:  # type: ignore[attr-defined]
            # The quantiser's per-dimension ranges come from the first rows; later rows outside them are
            # clamped in the codes only: the re-rank scores every answer on the exact vectors.
            self._index.train(vectors)  # type: ignore[attr-defined]
        self._walker = None  # it reads the graph's arrays in place, which adding reallocates
        # A graph read from disk keeps the setting it was built with (an earlier release's 40): rows are
        # linked in at this one whatever it was.
        self._index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION  # type: ignore[attr-defined]
        self._index.add(vectors)  # type: ignore[attr-defined]

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, effort: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        queries = np.ascontiguousarray(queries, dtype=np.float32)
        take = max(k, RERANK)
        ef = max(math.ceil(self.ef_search * effort), take)
        walker = self._native_walker()
        if walker is not None:
            bitmap = None if allowed is None else self._bitmap(allowed)
            candidates = [walker.search(q, ef, take, bitmap) for q in queries]  # type: ignore[attr-defined]
            return rerank(self.vectors, queries, candidates, k)
        if allowed is None:
            params = self._unfiltered.get(ef)
            if params is None:  # read-only during a search, so one object serves every thread
                params = self._unfiltered[ef] = faiss.SearchParametersHNSW(efSearch=ef)
            keep: object = None
        elif not allowed.flags.writeable:
            keep = self._standing_mask(allowed)
            params = keep[3].get(ef)
            if params is None:
                params = keep[3][ef] = faiss.SearchParametersHNSW(efSearch=ef, sel=keep[2])
        else:
            keep = _selector(allowed)
            params = faiss.SearchParametersHNSW(efSearch=ef, sel=keep[1])
        _, candidates = self._index.search(queries, take, params=params)  # type: ignore[attr-defined]
        del keep  # kept alive until the search is done: the selector only points at the bitmap
        return rerank(self.vectors, queries, candidates, k)

    @property
    def breadth_counts_allowed(self) -> bool:
        """Whether the walk's breadth counts only rows the query may be answered with (the native walk: at
        1M x 768 with a third of the rows masked, recall@10 0.979 at efSearch 88 where FAISS's walk, which
        counts every row it scores, gave 0.955; bench/hot/walk.py)."""
        return self._native_walker() is not None

    def _native_walker(self) -> object | None:
        if not self.native_walk or not len(self):
            return None
        if self._walker is None:
            from ... import native

            self._walker = native.sq8_graph(self._index) or False
        return self._walker or None

    def _bitmap(self, allowed: np.ndarray) -> np.ndarray:
        return _pack(allowed) if allowed.flags.writeable else self._standing_mask(allowed)[1]

    def _standing_mask(self, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray, object, dict[int, object]]:
        """(mask, bitmap, selector, FAISS search parameters by efSearch) of a read-only mask (a segment's live
        rows): it does not change, so its bitmap is made once, not per query."""
        keep = self._standing
        if keep is None or keep[0] is not allowed:
            keep = self._standing = (allowed, *_selector(allowed), {})
        return keep

    def locality_order(self) -> np.ndarray:
        """The rows in an order that stores each near its neighbours: breadth-first from the entry point over
        the graph's bottom layer, so the rows a node links to were mostly found together (rows it does not
        reach come last, in their order).

        A walk reads a few thousand rows' codes scattered over the index, and reads that land near each
        other cost less: stored in this order, the same 1M x 768 graph answered the same queries with
        0.79-0.94x the CPU in eight alternating passes (bench/hot/reorder.py), for about a second's work.
        """
        rows = len(self)
        bottom = self.bottom_links()
        seen = np.zeros(rows, dtype=bool)
        entry = self._index.hnsw.entry_point  # type: ignore[attr-defined]
        frontier = np.array([entry], dtype=np.int64) if rows else np.zeros(0, np.int64)
        seen[frontier] = True
        order = [frontier]
        while len(frontier):
            near = bottom[frontier].ravel()
            near = near[near >= 0]
            near = near[~seen[near]]
            _, first = np.unique(near, return_index=True)  # each row once, where it was first found
            frontier = near[np.sort(first)].astype(np.int64)
            seen[frontier] = True
            order.append(frontier)
        order.append(np.flatnonzero(~seen))
        return np.concatenate(order)

    def bottom_links(self) -> np.ndarray:
        """Each row's links in the graph's bottom layer, (rows, 2M) labels, -1 past the last."""
        import faiss

        hnsw = self._index.hnsw  # type: ignore[attr-defined]
        links = faiss.vector_to_array(hnsw.neighbors)
        offsets = faiss.vector_to_array(hnsw.offsets).astype(np.int64)
        width = int(faiss.vector_to_array(hnsw.cum_nneighbor_per_level)[1])
        bottom = np.empty((len(self), width), dtype=links.dtype)
        for start in range(0, len(self), 100_000):  # in slices: the gather's index would be 8 bytes a link
            stop = min(len(self), start + 100_000)
            bottom[start:stop] = links[offsets[start:stop, None] + np.arange(width)]
        return bottom

    def renumber(self, order: np.ndarray) -> None:
        """Store the rows in `order`: row i becomes the old row `order[i]`, the graph's codes and links moved
        with it (the same graph, the same answers under the new labels)."""
        self._index.permute_entries(np.ascontiguousarray(order, dtype=np.int64))  # type: ignore[attr-defined]
        self._walker, self._standing = None, None  # both point into the arrays the renumbering replaced
        if len(self.vectors):
            self.vectors = self.vectors[order]

    def save(self, path: Path, with_vectors: bool = True) -> None:
        import faiss

        path.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(path / self.FILE))
        if with_vectors:
            np.save(path / self.VECTORS, self.vectors)

    @classmethod
    def load(cls, path: Path, dims: int, vectors: np.ndarray | None = None, huge_pages: bool = True) -> FaissHnsw:
        import faiss

        if vectors is None:
            vectors = np.load(path / cls.VECTORS, mmap_mode="r")
        index = faiss.read_index(str(path / cls.FILE))
        if huge_pages:  # 2 s for a 1M graph: worth it for serving, not for a writer about to extend it
            prefer_huge_pages(index)
        return cls(dims, index, vectors)

    def __len__(self) -> int:
        return int(self._index.ntotal)  # type: ignore[attr-defined]


def _selector(allowed: np.ndarray) -> tuple[np.ndarray, object]:
    """(bitmap, FAISS selector over it) for a boolean mask over labels; the selector only points at the bitmap."""
    import faiss

    bitmap = _pack(allowed)
    return bitmap, faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))


def _pack(allowed: np.ndarray) -> np.ndarray:
    """A boolean mask over labels as the little-endian bitmap FAISS's IDSelectorBitmap and the native walk read."""
    return np.packbits(allowed.astype(np.uint8), bitorder="little")


def rerank(
    data: np.ndarray, queries: np.ndarray, candidates: Sequence[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best k of each query's candidate labels (a row each; -1 pads), scored exactly on `data` (natively:
    the rows' scores, their order and the padding in one call, without NumPy's gather, product and sort)."""
    from ... import native

    if len(queries) == 1:  # a service's query: the native answer as it is, no arrays to copy it into
        scores, labels = native.rerank(data, queries[0], candidates[0], k)
        return scores.reshape(1, -1), labels.reshape(1, -1)

    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_labels = np.full((len(queries), k), -1, dtype=np.int64)
    for row, labels in enumerate(candidates):
        out_scores[row], out_labels[row] = native.rerank(data, queries[row], labels, k)
    return out_scores, out_labels


def prefer_huge_pages(index: object) -> None:
    """Back a loaded graph's codes and neighbour lists with 2 MiB pages (Linux; best effort).

    A query visits a few thousand nodes scattered over the whole index, and with 4 KiB pages nearly each
    of them costs a TLB miss and a page-table walk on top of the cache misses: huge pages took about 14%
    off a 1M x 768 search (bench/hot). The kernel copies the pages in place, so nothing else changes.
    """
    if not sys.platform.startswith("linux"):
        return
    import faiss

    hnsw = getattr(index, "hnsw", None)
    storage = getattr(index, "storage", None)
    if hnsw is None or storage is None:
        return
    codes = getattr(faiss.downcast_index(storage), "codes", None)
    regions = [(hnsw.neighbors, hnsw.neighbors.size() * 4)]
    if codes is not None:
        regions.append((codes, codes.size()))
    for vector, nbytes in regions:
        start = int(vector.data())
        first = (start + _HUGE_PAGE - 1) & ~(_HUGE_PAGE - 1)
        last = (start + nbytes) & ~(_HUGE_PAGE - 1)
        if last > first:
            # Either call may be refused (THP off, an old kernel): the index then works as before.
            _madvise(first, last - first, _MADV_HUGEPAGE, _MADV_COLLAPSE)


def populate(rows: np.ndarray) -> None:
    """Map a memory-mapped array's pages in now (Linux 5.14+; best effort), not one fault per row later.

    A query re-ranks 20 rows scattered over the whole rows file; on a freshly mapped file each costs a page
    fault, which took a 1M-row window's first thousand queries from 0.84 to 1.23 ms at p50 (bench/hot).
    """
    if not sys.platform.startswith("linux") or not rows.nbytes:
        return
    start = rows.ctypes.data & ~(_PAGE - 1)
    _madvise(start, rows.ctypes.data + rows.nbytes - start, _MADV_POPULATE_READ)


def _madvise(start: int, length: int, *advice: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        for value in advice:
            libc.madvise(start, length, value)
    except (OSError, AttributeError, TypeError):
        return


class ExactIndex:
    """Exact search over the vectors in memory: the reference, and the answer for tiny segments."""

    FILE = "vectors.npy"

    def __init__(self, dims: int, data: np.ndarray | None = None) -> None:
        self.dims = dims
        self.data = np.zeros((0, dims), dtype=np.float32) if data is None else data

    def add(self, vectors: np.ndarray) -> None:
        self.data = np.concatenate([self.data, np.asarray(vectors, dtype=np.float32)])

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, effort: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        return exact_search(self.data, np.asarray(queries, dtype=np.float32), k, allowed)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / self.FILE, self.data)

    @classmethod
    def load(cls, path: Path, dims: int) -> ExactIndex:
        return cls(dims, np.load(path / cls.FILE))

    def __len__(self) -> int:
        return len(self.data)
