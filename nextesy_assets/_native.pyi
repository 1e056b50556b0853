"""Type stubs of the compiled engine (rust_ext/); use it through nextesy_assets.native."""

from typing import Any

import numpy as np

class InvalidInputError(ValueError):
    """The landing file cannot be converted at all."""

class ArrowBatch:
    """A record batch offered through the Arrow PyCapsule interface."""

    def __arrow_c_array__(self, requested_schema: object | None = None) -> tuple[object, object]: ...

class Sq8Graph:
    """A FAISS IndexHNSWSQ (8-bit codes, inner product) walked natively, its arrays read in place."""

    def __init__(
        self,
        owner: object,
        neighbors: tuple[int, int],
        offsets: tuple[int, int],
        levels: tuple[int, int],
        codes: tuple[int, int],
        cum_neighbors: list[int],
        vdiff: list[float],
        entry_point: int,
        max_level: int,
    ) -> None: ...
    def search(self, query: np.ndarray, ef: int, take: int, allowed: np.ndarray | None = None) -> np.ndarray: ...

def convert(
    input: str,
    format: str,
    out_dir: str,
    rejects_path: str,
    *,
    dims: int,
    default_model: str,
    raw_limit: int,
    batch_id: str,
    ingested_at_us: int,
    row_group_rows: int,
    zstd_level: int = 1,
    threads: int = 0,
    sidecar: str | None = None,
) -> tuple[dict[str, Any], ArrowBatch]: ...
def count_records(input: str, format: str, sidecar: str | None = None) -> tuple[int, str | None]: ...
def object_vector(body: bytes) -> tuple[np.ndarray, int, int] | None: ...
def rerank(vectors: np.ndarray, query: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...
def vector_stats(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
def version() -> str: ...
