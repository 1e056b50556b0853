"""Shared fixtures: an isolated environment, a temporary NEXTESY_HOME and small landing files."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nextesy_assets.lib.settings import ENV_VARS, Settings

from . import stores

DIMS = 8


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user pyiceberg config, no stray NEXTESY_*/DAGSTER_HOME/cloud variables."""
    for name in list(os.environ):
        if name.startswith(("NEXTESY_", "PYICEBERG_", "AWS_", "GOOGLE_", "GCE_", "GCSFS_")) or name in (
            "DAGSTER_HOME",
            "STORAGE_EMULATOR_HOST",
            "NO_GCE_CHECK",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path_factory.mktemp("pyiceberg-home")))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's standalone S3 server on a free port of 127.0.0.1, for the whole session."""
    yield from stores.moto_server()


@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """fake-gcs-server on a free port of 127.0.0.1, for the whole session."""
    yield from stores.fake_gcs_server(tmp_path_factory.mktemp("fake-gcs"))


@pytest.fixture
def cloud(
    home: Path, s3_endpoint: str, gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> dict[str, str]:
    """Landing and warehouse on S3, the replica on GCS: fresh buckets per test, catalogs and Dagster local."""
    for name, value in {
        **stores.CLOUD_ENV,
        "AWS_ENDPOINT_URL": s3_endpoint,
        "STORAGE_EMULATOR_HOST": gcs_endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    import boto3

    readable = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:30].strip("-")
    suffix = f"{readable}-{hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]}"
    aws_bucket, gcp_bucket = f"aws-{suffix}", f"gcp-{suffix}"
    boto3.client("s3").create_bucket(Bucket=aws_bucket)
    from nextesy_assets.lib.storage import gcs_client

    gcs_client().create_bucket(gcp_bucket)
    uris = {
        "landing": f"s3://{aws_bucket}/landing",
        "warehouse": f"s3://{aws_bucket}/warehouse",
        "replica": f"gs://{gcp_bucket}/replica",
    }
    monkeypatch.setenv("NEXTESY_LANDING_URI", uris["landing"])
    monkeypatch.setenv("NEXTESY_WAREHOUSE_URI", uris["warehouse"])
    monkeypatch.setenv("NEXTESY_REPLICA_URI", uris["replica"])
    return uris


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh NEXTESY_HOME (and DAGSTER_HOME under it) with small vectors."""
    root = tmp_path / "nextesy"
    monkeypatch.setenv(ENV_VARS["home"], str(root))
    monkeypatch.setenv(ENV_VARS["dims"], str(DIMS))
    monkeypatch.setenv("DAGSTER_HOME", str(root / "dagster"))
    (root / "dagster").mkdir(parents=True)
    return root


@pytest.fixture
def settings(home: Path) -> Settings:
    return Settings.load()


def vector(seed: int, dims: int = DIMS) -> list[float]:
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(dims).astype(np.float32)
    return [float(v) for v in values / np.linalg.norm(values)]


def good_record(i: int, day: int = 20, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": f"doc-{i}",
        "vector": vector(i),
        "ts": f"2026-11-{day:02d}T{i % 24:02d}:15:00+00:00",
        "source": "search-api",
    }
    record.update(extra)
    return record


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def write_records(path: Path, records: list[dict[str, Any]]) -> Path:
    return write_lines(path, [json.dumps(r) for r in records])


# One line per quarantine reason (JSONL), with the reason it must get.
BAD_LINES: list[tuple[str, str]] = [
    ('{"id": "broken", "vector": [0.1,', "malformed_record"),
    ("[1, 2, 3]", "malformed_record"),
    (json.dumps({"vector": vector(1), "ts": "2026-11-20T00:00:00Z"}), "missing_field"),
    (json.dumps({"id": "no-vector", "ts": "2026-11-20T00:00:00Z"}), "missing_field"),
    (json.dumps({"id": "", "vector": vector(1), "ts": "2026-11-20T00:00:00Z"}), "missing_field"),
    (json.dumps({"id": 17, "vector": vector(1), "ts": "2026-11-20T00:00:00Z"}), "bad_type"),
    (json.dumps({"id": "text", "vector": "0.1,0.2", "ts": "2026-11-20T00:00:00Z"}), "bad_type"),
    (json.dumps({"id": "strs", "vector": ["0.1"] * DIMS, "ts": "2026-11-20T00:00:00Z"}), "bad_type"),
    (json.dumps({"id": "bools", "vector": [True] * DIMS, "ts": "2026-11-20T00:00:00Z"}), "bad_type"),
    (json.dumps({"id": "m", "model": 3, "vector": vector(1), "ts": "2026-11-20T00:00:00Z"}), "bad_type"),
    (json.dumps({"id": "short", "vector": vector(1)[:3], "ts": "2026-11-20T00:00:00Z"}), "wrong_dimension"),
    (json.dumps({"id": "long", "vector": [*vector(1), 0.0], "ts": "2026-11-20T00:00:00Z"}), "wrong_dimension"),
    (json.dumps({"id": "nan", "vector": [float("nan"), *vector(1)[1:]], "ts": "2026-11-20T00:00:00Z"}), "non_finite"),
    (json.dumps({"id": "inf", "vector": [float("inf"), *vector(1)[1:]], "ts": "2026-11-20T00:00:00Z"}), "non_finite"),
    (json.dumps({"id": "f32-overflow", "vector": [1e39, *vector(1)[1:]], "ts": "2026-11-20T00:00:00Z"}), "non_finite"),
    (json.dumps({"id": "naive", "vector": vector(1), "ts": "2026-11-20T00:00:00"}), "bad_timestamp"),
    (json.dumps({"id": "words", "vector": vector(1), "ts": "yesterday"}), "bad_timestamp"),
    (json.dumps({"id": "boolts", "vector": vector(1), "ts": True}), "bad_timestamp"),
    (json.dumps({"id": "far", "vector": vector(1), "ts": 10**18}), "bad_timestamp"),
]


@pytest.fixture
def batch_with_every_reason(home: Path) -> Iterator[tuple[Path, int, dict[str, int]]]:
    """A landing file of good records, every kind of bad record and a duplicate key.

    Yields (path, good rows, expected reasons).
    """
    good = [good_record(i, day=20 + i % 3) for i in range(30)]
    lines = [json.dumps(r) for r in good]
    for offset, (line, _) in enumerate(BAD_LINES):
        lines.insert(2 * offset + 1, line)
    lines.append(json.dumps(good[4]))  # duplicate_key: same id, model, ts as an earlier good record
    lines.insert(5, "")  # blank lines are not records
    reasons: dict[str, int] = {}
    for _, reason in BAD_LINES:
        reasons[reason] = reasons.get(reason, 0) + 1
    reasons["duplicate_key"] = 1
    yield write_lines(home / "landing" / "2026" / "11" / "batch-a.jsonl", lines), len(good), reasons
