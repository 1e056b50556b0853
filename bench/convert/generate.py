"""Benchmark inputs for `nextesy convert`: the same N rows of structured float32 vectors as JSONL, CSV and NPY.

Vectors are unit-length low-rank mixtures (a few cluster centroids in a shared low-rank subspace, plus a
little isotropic noise), which is how real sentence embeddings look: far from isotropic random data.
Floats are written as the shortest text that round-trips the float32 (orjson's float32 formatting), so a
converter that parses text to float32 correctly reproduces the NPY values bit for bit.

    .venv/bin/python bench/convert/generate.py --rows 200000 [--dims 768] [--seed 7] [--data-dir bench/data]

Writes, under --data-dir, `<stem>.jsonl`, `<stem>.csv` (header `id,ts,model,source,vector`, vector as a
JSON-array text), `<stem>.npy` (float32, 2-D) and its sidecar `<stem>.meta.jsonl` (id, ts, model, source per
row, same order), where stem is `vectors-<rows>x<dims>-s<seed>`. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = ROOT / "bench" / "data"
CHUNK_ROWS = 8192  # generation and writing go chunk by chunk, so memory stays flat for any --rows
MODELS = ("text-embed-v3", "text-embed-v2")
SOURCES = ("search-api", "recommendations", "support-bot")
# Offsets in minutes: every ts carries one, and they differ, as they would from clients in several places.
OFFSETS_MIN = np.array([0, 60, -300, 330], dtype=np.int64)
OFFSET_TEXT = np.array(["+00:00", "+01:00", "-05:00", "+05:30"])
START = np.datetime64("2026-11-18T00:00:00", "ms")  # rows spread over the three days that follow
SPAN_MS = 3 * 86_400_000
FORMATS = ("jsonl", "csv", "npy")


@dataclass(frozen=True)
class Chunk:
    ids: np.ndarray  # str
    ts: np.ndarray  # str, ISO-8601 with offset
    models: np.ndarray  # str
    sources: np.ndarray  # str
    vectors: np.ndarray  # float32 (rows, dims), unit length


def stem(rows: int, dims: int, seed: int) -> str:
    return f"vectors-{rows}x{dims}-s{seed}"


def paths(data_dir: Path, rows: int, dims: int, seed: int) -> dict[str, Path]:
    """The files one (rows, dims, seed) produces, by format; `meta` is the NPY sidecar."""
    base = data_dir / stem(rows, dims, seed)
    return {
        "jsonl": base.with_suffix(".jsonl"),
        "csv": base.with_suffix(".csv"),
        "npy": base.with_suffix(".npy"),
        "meta": base.with_suffix(".meta.jsonl"),
    }


def chunks(rows: int, dims: int, seed: int, clusters: int = 12, rank: int = 32) -> Iterator[Chunk]:
    """The rows in order, CHUNK_ROWS at a time; the model (subspace, centroids) is fixed by `seed`."""
    rng = np.random.default_rng(seed)
    rank = min(rank, dims)
    basis = rng.standard_normal((rank, dims), dtype=np.float32)
    # A shared offset for all centroids: real embeddings have a common direction (anisotropy).
    common = 2.0 * rng.standard_normal(rank, dtype=np.float32)
    centroids = rng.standard_normal((clusters, rank), dtype=np.float32) + common
    for start in range(0, rows, CHUNK_ROWS):
        n = min(CHUNK_ROWS, rows - start)
        labels = rng.integers(0, clusters, n)
        latent = centroids[labels] + 0.35 * rng.standard_normal((n, rank), dtype=np.float32)
        vectors = latent @ basis + 0.05 * rng.standard_normal((n, dims), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index = np.arange(start, start + n)
        instants = START + rng.integers(0, SPAN_MS, n).astype("timedelta64[ms]")
        zone = rng.integers(0, len(OFFSETS_MIN), n)
        local = instants + OFFSETS_MIN[zone].astype("timedelta64[m]")
        ts = np.char.add(np.datetime_as_string(local, unit="ms"), OFFSET_TEXT[zone])
        yield Chunk(
            ids=np.char.add("doc-", np.char.zfill(index.astype(str), 9)),
            ts=ts,
            models=np.asarray(MODELS)[(index % 7 == 0).astype(np.int64)],
            sources=np.asarray(SOURCES)[index % len(SOURCES)],
            vectors=np.ascontiguousarray(vectors, dtype=np.float32),
        )


def _meta(chunk: Chunk, i: int) -> dict[str, str]:
    return {
        "id": str(chunk.ids[i]),
        "ts": str(chunk.ts[i]),
        "model": str(chunk.models[i]),
        "source": str(chunk.sources[i]),
    }


def generate(rows: int, dims: int, seed: int, data_dir: Path, formats: tuple[str, ...] = FORMATS) -> dict[str, Path]:
    """Write the requested formats (all from one pass over the rows) and return every file's path."""
    data_dir.mkdir(parents=True, exist_ok=True)
    out = paths(data_dir, rows, dims, seed)
    tmp = {key: path.with_name(path.name + ".partial") for key, path in out.items()}
    wanted = set(formats) | ({"meta"} if "npy" in formats else set())
    handles = {key: tmp[key].open("wb") for key in wanted if key != "npy"}
    matrix = (
        np.lib.format.open_memmap(tmp["npy"], mode="w+", dtype=np.float32, shape=(rows, dims))
        if "npy" in wanted
        else None
    )
    if "csv" in handles:
        handles["csv"].write(b"id,ts,model,source,vector\n")
    numpy_floats = orjson.OPT_SERIALIZE_NUMPY
    done = 0
    for chunk in chunks(rows, dims, seed):
        n = len(chunk.ids)
        if matrix is not None:
            matrix[done : done + n] = chunk.vectors
        jsonl: list[bytes] = []
        csv: list[bytes] = []
        meta: list[bytes] = []
        for i in range(n):
            head = _meta(chunk, i)
            record = orjson.dumps(head)
            vector = orjson.dumps(chunk.vectors[i], option=numpy_floats)
            if "jsonl" in handles:
                jsonl.append(record[:-1] + b',"vector":' + vector + b"}")
            if "csv" in handles:
                # Fields never hold commas or quotes except the vector, which is quoted whole.
                csv.append(f'{head["id"]},{head["ts"]},{head["model"]},{head["source"]},"'.encode() + vector + b'"')
            if "meta" in handles:
                meta.append(record)
        for key, lines in (("jsonl", jsonl), ("csv", csv), ("meta", meta)):
            if key in handles:
                handles[key].write(b"\n".join(lines) + b"\n")
        done += n
    for handle in handles.values():
        handle.close()
    if matrix is not None:
        matrix.flush()
        del matrix
    for key in wanted:
        tmp[key].replace(out[key])
    return {key: out[key] for key in wanted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dims", type=int, default=768)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated subset of jsonl,csv,npy")
    args = parser.parse_args()
    formats = tuple(f for f in args.formats.split(",") if f)
    unknown = set(formats) - set(FORMATS)
    if unknown:
        parser.error(f"unknown formats {sorted(unknown)}; choose from {FORMATS}")
    started = time.perf_counter()
    written = generate(args.rows, args.dims, args.seed, args.data_dir, formats)
    elapsed = time.perf_counter() - started
    for key, path in sorted(written.items()):
        print(f"{key:5} {path}  {path.stat().st_size / 1e6:,.1f} MB")
    print(f"{args.rows} rows x {args.dims} in {elapsed:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
