"""`dagster dev` killed (SIGKILL, every process of it) while its replica run is copying; a sync then converges."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from nextesy_assets.lib import iceberg, replication
from nextesy_assets.lib import properties as props
from nextesy_assets.lib.settings import Settings

from . import stores
from .test_crashes import GOOD_ROWS, assert_exact, land, last_replica_metadata, run_sync


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie nobody reaped is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def gone(pid: int, within_s: float = 10.0) -> bool:
    """Whether `pid` stops running within `within_s`: a SIGKILL is delivered, and the process torn
    down, after the kill call returns."""
    deadline = time.monotonic() + within_s
    while running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.mark.timeout(240)
def test_dagster_dev_killed_mid_copy_then_sync_converges(home: Path, settings: Settings, tmp_path: Path) -> None:
    land(settings, batches=1)  # one batch over two days: two data files to copy
    # Ingested, the replica not committed: the sync dies at its first verified copy.
    assert run_sync({"NEXTESY_FAILPOINTS": "replica.after_copy:1"}).returncode == -signal.SIGKILL

    paused, log_path = tmp_path / "paused", tmp_path / "dagster-dev.log"
    env = {
        **os.environ,
        # The replica run that replica_sensor starts stops after its second verified copy, then is killed.
        "NEXTESY_FAILPOINTS": "replica.after_copy:2=pause",
        "NEXTESY_FAILPOINTS_PAUSED": str(paused),
    }
    with open(log_path, "wb") as log:
        dev = subprocess.Popen(
            [sys.executable, "-m", "nextesy_assets.cli", "ui", "--port", str(stores.free_port())],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # dagster dev ignores SIGTERM when backgrounded: its group gets SIGKILL
        )
    worker = None
    try:
        deadline = time.monotonic() + 180
        while not paused.exists():
            assert dev.poll() is None, f"dagster dev exited {dev.returncode}:\n{tail(log_path)}"
            assert time.monotonic() < deadline, f"no replica run reached the copy:\n{tail(log_path)}"
            time.sleep(0.5)
        worker = int(paused.read_text())
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(dev.pid, signal.SIGKILL)
        dev.wait(timeout=30)
        if worker is not None:  # the step process, in case the launcher gave it a session of its own
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)

    assert worker != dev.pid
    assert gone(worker)  # nothing of it left running
    # The run replica_sensor launched was cut off mid-copy: it never finished, nothing was committed.
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name=props.REPLICATE_JOB))
        assert runs and all(run.status != dg.DagsterRunStatus.SUCCESS for run in runs)
        assert any(run.tags.get("dagster/sensor_name") == "replica_sensor" for run in runs)
    source = iceberg.embeddings_table(settings)
    assert replication.watermark(replication.ensure_replica_table(settings, source)) is None

    rerun = run_sync()
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert_exact(settings, good_rows=GOOD_ROWS // 3)
    meta = last_replica_metadata(home)
    assert int(meta["files_reused"]) >= 1  # what the killed runs had verified is not copied again
