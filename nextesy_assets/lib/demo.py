"""Realistic sample landing files: structured embeddings over a few days, with a few bad records."""

from __future__ import annotations

import gzip
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson

from . import storage
from .settings import Settings

_DEMO_NAME = re.compile(r"embeddings-(\d{4})\.jsonl(\.gz)?$")
MODELS = ("text-embed-v3", "text-embed-v2")
SOURCES = ("search-api", "recommendations", "support-bot")


@dataclass(frozen=True)
class DemoFile:
    uri: str
    records: int
    bad_records: int


def structured_vectors(
    rng: np.random.Generator, rows: int, dims: int, clusters: int = 12, space_seed: int = 0
) -> np.ndarray:
    """Unit vectors from a low-rank mixture: cluster centroids plus noise in a shared subspace, like
    real sentence embeddings (which are far from isotropic: they share a common direction).

    `space_seed` fixes the subspace and the clusters, so calls with different `rng`s sample one model.
    """
    rank = min(dims, 32)
    space = np.random.default_rng(space_seed)
    basis = space.standard_normal((rank, dims)).astype(np.float32)
    centroids = space.standard_normal((clusters, rank)).astype(np.float32) + 2.0 * space.standard_normal(rank).astype(
        np.float32
    )
    labels = rng.integers(0, clusters, rows)
    latent = centroids[labels] + 0.35 * rng.standard_normal((rows, rank)).astype(np.float32)
    vectors = latent @ basis + 0.05 * rng.standard_normal((rows, dims)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _bad_records(stem: str, dims: int, good: dict[str, object], now: datetime) -> list[str]:
    """One record for each quarantine reason, as the raw lines an application might really send."""
    vector = [0.01] * dims
    iso = now.isoformat()
    return [
        '{"id": "' + stem + '-broken", "vector": [0.1, 0.2',  # malformed_record (truncated write)
        json.dumps({"vector": vector, "ts": iso}),  # missing_field: no id
        json.dumps({"id": f"{stem}-text-vector", "vector": "0.1,0.2", "ts": iso}),  # bad_type
        json.dumps({"id": f"{stem}-short", "vector": vector[: dims // 2], "ts": iso}),  # wrong_dimension
        json.dumps({"id": f"{stem}-nan", "vector": [float("nan"), *vector[1:]], "ts": iso}),  # non_finite
        json.dumps({"id": f"{stem}-naive-ts", "vector": vector, "ts": "2026-11-20 10:00:00"}),  # bad_timestamp
        json.dumps(good),  # duplicate_key: the same (id, model, ts) again
    ]


def _next_number(landing_uri: str) -> int:
    numbers = [
        int(m.group(1))
        for page in storage.list_objects(landing_uri)
        for obj in page
        if (m := _DEMO_NAME.search(obj.key))
    ]
    return max(numbers, default=0) + 1


def write_demo(
    settings: Settings, files: int = 3, rows: int = 500, seed: int | None = None, now: datetime | None = None
) -> list[DemoFile]:
    """Write `files` new landing files of `rows` good records each, spread over the last three days.

    Existing files are never rewritten (a rewrite would be a new batch); numbering continues after them.
    The first file carries one bad record of each kind; the last one is gzip-compressed; with three or
    more files, the second is a NumPy file with its metadata sidecar.
    """
    now = now or datetime.now(UTC)
    first = _next_number(settings.landing_uri)
    rng = np.random.default_rng(seed if seed is not None else first)
    written: list[DemoFile] = []
    for number in range(first, first + files):
        stem = f"embeddings-{number:04d}"
        vectors = structured_vectors(rng, rows, settings.dims)
        offsets = rng.uniform(0, 3 * 86_400, rows)
        lines: list[str] = []
        for i in range(rows):
            record: dict[str, object] = {
                "id": f"{stem}-{i:06d}",
                "vector": vectors[i].tolist(),
                "ts": (now - timedelta(seconds=float(offsets[i]))).isoformat(timespec="milliseconds")
                if i % 2
                else int((now.timestamp() - offsets[i]) * 1000),
                "model": MODELS[i % 7 == 0],
                "source": SOURCES[i % len(SOURCES)],
                "lang": "en" if i % 3 else "de",
                "doc_chars": int(rng.integers(80, 4000)),
            }
            lines.append(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY).decode())
        bad = _bad_records(stem, settings.dims, orjson.loads(lines[0]), now) if number == first else []
        lines[len(lines) // 2 : len(lines) // 2] = bad
        gz = number == first + files - 1 and files > 1
        if number == first + 1 and files > 2:
            # NumPy: the vectors as a float32 matrix, everything else in the sidecar (written first).
            uri = storage.join(settings.landing_uri, f"{stem}.npy")
            metas = [orjson.loads(line) for line in lines]
            sidecar = b"".join(orjson.dumps({k: v for k, v in m.items() if k != "vector"}) + b"\n" for m in metas)
            storage.write_bytes(storage.join(settings.landing_uri, f"{stem}.meta.jsonl"), sidecar)
            matrix = io.BytesIO()
            np.save(matrix, vectors.astype(np.float32))
            storage.write_bytes(uri, matrix.getvalue())
            written.append(DemoFile(uri=uri, records=rows, bad_records=0))
            continue
        content = ("\n".join(lines) + "\n").encode()
        name = f"{stem}.jsonl.gz" if gz else f"{stem}.jsonl"
        uri = storage.join(settings.landing_uri, name)
        storage.write_bytes(uri, gzip.compress(content, mtime=0) if gz else content)
        written.append(DemoFile(uri=uri, records=rows + len(bad), bad_records=len(bad)))
    if not storage.exists(storage.join(settings.landing_uri, "README.txt")):
        # Not an embeddings file: shows how unsupported files are skipped and reported.
        storage.write_bytes(
            storage.join(settings.landing_uri, "README.txt"),
            b"Landing zone for Nextesy: drop .jsonl[.gz], .csv, .npy (with its .meta.jsonl first) or .parquet "
            b"embedding files here.\n",
        )
    return written
