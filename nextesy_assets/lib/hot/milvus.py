"""The index interface over a Milvus server through pymilvus: where the hot tier goes when one machine is
not enough. Tested against Milvus Lite, which pymilvus starts in-process for a `*.db` uri.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigurationError
from .engine import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M

LABEL = "label"
VECTOR = "vector"


class MilvusIndex:
    """One Milvus collection holding one segment's vectors; labels are the primary keys (0..n-1)."""

    def __init__(self, uri: str, collection: str, dims: int) -> None:
        try:
            from pymilvus import DataType, MilvusClient
        except ImportError as exc:  # an optional backend says which extra brings it
            raise ConfigurationError("the Milvus index needs pymilvus: pip install 'nextesy[test]'") from exc
        self.dims = dims
        self.collection = collection
        self.client = MilvusClient(uri)
        if not self.client.has_collection(collection):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field(LABEL, DataType.INT64, is_primary=True)
            schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=dims)
            index_params = self.client.prepare_index_params()
            index_params.add_index(
                field_name=VECTOR,
                index_type="HNSW",
                metric_type="IP",
                params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION},
            )
            self.client.create_collection(collection, schema=schema, index_params=index_params)
        self.client.load_collection(collection)
        self._count = self._stored()

    def _stored(self) -> int:
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def add(self, vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if not len(vectors):
            return
        rows = [{LABEL: self._count + i, VECTOR: v.tolist()} for i, v in enumerate(vectors)]
        self.client.insert(self.collection, rows)
        self._count += len(rows)

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, effort: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:  # the server sets its own search breadth: `effort` is not passed on
        flt = ""
        if allowed is not None:
            labels = np.flatnonzero(allowed)
            if not len(labels):
                return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
            flt = f"{LABEL} in [{', '.join(map(str, labels.tolist()))}]"
        answers = self.client.search(
            self.collection,
            data=[q.tolist() for q in np.asarray(queries, dtype=np.float32)],
            filter=flt,
            limit=k,
            output_fields=[LABEL],
            search_params={"metric_type": "IP", "params": {"ef": max(HNSW_EF_SEARCH, k)}},
        )
        scores = np.full((len(queries), k), -np.inf, np.float32)
        labels_out = np.full((len(queries), k), -1, np.int64)
        for row, hits in enumerate(answers):
            for col, hit in enumerate(list(hits)[:k]):
                scores[row, col] = float(hit["distance"])
                labels_out[row, col] = int(hit[LABEL])
        return scores, labels_out

    def save(self, path: Path) -> None:
        """The server persists what it holds; flushing makes it durable now."""
        self.client.flush(self.collection)

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        self.client.close()
