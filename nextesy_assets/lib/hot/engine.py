"""One small interface for an ANN index over unit vectors, and its implementations (FAISS HNSW, exact).

Labels are the row positions of a segment (0..n-1); scores are inner products of unit vectors (cosine).
The engine was chosen by measurement (bench/hot): FAISS HNSW, M=32, efConstruction=40, efSearch=96
(the smallest of 64/96/128/192 that keeps recall@10 above 0.95 at 1M x 768: 0.939 at 64, 0.970 at 96).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 96
# Below this many allowed rows a filtered query is answered exactly: cheaper than a graph walk that
# must skip most of its neighbours, and it never loses recall to a selective filter.
EXACT_BELOW = 20_000


class VectorIndex(Protocol):
    """What the hot tier needs from an ANN engine."""

    def add(self, vectors: np.ndarray) -> None:
        """Append unit vectors; they get the next labels in order."""

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, labels) of shape (len(queries), k), best first; label -1 pads a short answer.

        `allowed` is an optional boolean mask over labels: only those rows may be returned.
        """

    def save(self, path: Path) -> None:
        """Persist to `path` (a file or a directory, as the engine needs)."""

    def __len__(self) -> int: ...


def normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
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
    scores = queries @ (data if allowed is None else data[labels]).T
    take = min(k, len(labels))
    top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    for row in range(len(queries)):
        order = top[row][np.lexsort((labels[top[row]], -scores[row, top[row]]))]
        out_scores[row, :take] = scores[row, order]
        out_labels[row, :take] = labels[order]
    return out_scores, out_labels


class FaissHnsw:
    """FAISS HNSW over inner product; filtered queries go through an id-selector bitmap."""

    FILE = "index.faiss"

    def __init__(self, dims: int, index: object | None = None) -> None:
        import faiss

        self.dims = dims
        if index is None:
            index = faiss.IndexHNSWFlat(dims, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        self._index = index

    def add(self, vectors: np.ndarray) -> None:
        if len(vectors):
            self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))  # type: ignore[attr-defined]

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        queries = np.ascontiguousarray(queries, dtype=np.float32)
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(HNSW_EF_SEARCH, k)
        bitmap = None
        if allowed is not None:
            bitmap = np.packbits(allowed.astype(np.uint8), bitorder="little")
            params.sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
        scores, labels = self._index.search(queries, k, params=params)  # type: ignore[attr-defined]
        del bitmap  # kept alive until the search is done: the selector only points at it
        return scores, labels.astype(np.int64)

    def save(self, path: Path) -> None:
        import faiss

        path.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(path / self.FILE))

    @classmethod
    def load(cls, path: Path, dims: int) -> FaissHnsw:
        import faiss

        return cls(dims, faiss.read_index(str(path / cls.FILE)))

    def __len__(self) -> int:
        return int(self._index.ntotal)  # type: ignore[attr-defined]


class ExactIndex:
    """Exact search over the vectors in memory: the reference, and the answer for tiny segments."""

    FILE = "vectors.npy"

    def __init__(self, dims: int, data: np.ndarray | None = None) -> None:
        self.dims = dims
        self.data = np.zeros((0, dims), dtype=np.float32) if data is None else data

    def add(self, vectors: np.ndarray) -> None:
        self.data = np.concatenate([self.data, np.asarray(vectors, dtype=np.float32)])

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return exact_search(self.data, np.asarray(queries, dtype=np.float32), k, allowed)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / self.FILE, self.data)

    @classmethod
    def load(cls, path: Path, dims: int) -> ExactIndex:
        return cls(dims, np.load(path / cls.FILE))

    def __len__(self) -> int:
        return len(self.data)
