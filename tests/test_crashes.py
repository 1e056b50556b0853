"""kill -9 at every step, then rerun: the tables and the replica converge to exactly the right state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from nextesy_assets.lib import iceberg, replication, storage
from nextesy_assets.lib.settings import Settings

from .conftest import BAD_LINES, good_record

GOOD_ROWS = 24
BAD_ROWS = 3


def run_sync(env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "nextesy_assets.cli", "sync"], env=env, capture_output=True, text=True, timeout=300
    )


def land(settings: Settings, batches: int = 3) -> None:
    for n in range(batches):
        lines = [json.dumps(good_record(100 * n + i, day=20 + i % 2)) for i in range(GOOD_ROWS // 3)]
        if n == 0:
            lines += [line for line, _ in BAD_LINES[:BAD_ROWS]]
        storage.write_bytes(f"{settings.landing_uri}/batch-{n}.jsonl", "".join(f"{x}\n" for x in lines).encode())


def assert_exact(settings: Settings, good_rows: int = GOOD_ROWS) -> None:
    source = iceberg.embeddings_table(settings)
    rows = source.scan().to_arrow()
    keys = list(zip(rows["id"].to_pylist(), rows["model"].to_pylist(), rows["ts"].to_pylist(), strict=True))
    assert len(keys) == good_rows and len(set(keys)) == good_rows  # nothing missing, nothing twice
    quarantined = iceberg.ensure_quarantine_table(iceberg.source_catalog(settings), settings.warehouse_uri)
    assert quarantined.scan().to_arrow().num_rows == BAD_ROWS
    assert iceberg.reconcile(source, quarantined).ok
    replica = replication.ensure_replica_table(settings, source)
    assert replication.watermark(replica) == source.current_snapshot().snapshot_id
    parity = replication.parity(settings, checksum_sample=None)
    assert parity.ok, parity.describe()
    for data_file in replication.live_files(replica).values():  # no orphan referenced
        assert storage.exists(data_file.file_path)


def last_replica_metadata(home: Path) -> dict[str, object]:
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("gcs_replica"))
        assert event is not None and event.asset_materialization is not None
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}


@pytest.mark.parametrize(
    "failpoint",
    [
        "ingest.after_data_file:2",  # a batch's files partly written, nothing committed
        "iceberg.before_commit:2",  # files written, commit not started
        "iceberg.after_commit:2",  # committed, but Dagster never heard of it
        "replica.after_copy:2",  # replica partly copied, not committed
        "replica.before_commit",  # every copy verified, commit not started
    ],
)
def test_kill_minus_nine_then_rerun_converges_exactly(home: Path, settings: Settings, failpoint: str) -> None:
    land(settings)
    killed = run_sync({"NEXTESY_FAILPOINTS": failpoint})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    rerun = run_sync()
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert_exact(settings)
    if failpoint.startswith("replica."):
        meta = last_replica_metadata(home)
        # Only what was not verified before the crash is copied again.
        assert int(meta["files_reused"]) >= (1 if failpoint == "replica.after_copy:2" else 0)
        assert int(meta["files_reused"]) + int(meta["files_copied"]) == len(
            replication.live_files(iceberg.embeddings_table(settings))
        )
    assert run_sync().returncode == 0  # and a further sync changes nothing
    assert_exact(settings)


@pytest.mark.parametrize("failpoint", ["iceberg.after_commit:2", "replica.after_copy:3"])
def test_kill_minus_nine_on_s3_and_gcs(cloud: dict[str, str], settings: Settings, failpoint: str) -> None:
    land(settings)
    assert run_sync({"NEXTESY_FAILPOINTS": failpoint}).returncode == -signal.SIGKILL
    rerun = run_sync()
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert_exact(settings)
