"""`nextesy sync`: in one process, what the sensors do in production, recorded in the Dagster instance."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from .lib import iceberg, landing, replication
from .lib import properties as props
from .lib.batches import BatchRegistration
from .lib.breaker import is_store_failure
from .lib.errors import NextesyError
from .lib.settings import Settings

# Runs started by sync print nothing themselves: sync reports each batch, and the full event log of
# every run (failures with their stack traces) is in the Dagster UI.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
_DAGSTER_YAML = "telemetry:\n  enabled: false\n"


@dataclass
class BatchOutcome:
    batch_id: str
    key: str
    ok: bool
    rows_in: int = 0
    rows_committed: int = 0
    rows_quarantined: int = 0
    error: str | None = None


@dataclass
class SyncSummary:
    batches: list[BatchOutcome] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    replica_ran: bool = False
    replica_ok: bool = True
    replica_error: str | None = None
    replica_metadata: dict[str, object] = field(default_factory=dict)
    source_snapshot_id: int | None = None
    watermark: int | None = None
    hot_ran: bool = False
    hot_ok: bool = True
    hot_error: str | None = None
    hot_metadata: dict[str, object] = field(default_factory=dict)
    hot_snapshot_id: int | None = None

    @property
    def failed(self) -> bool:
        return not self.replica_ok or not self.hot_ok or any(not b.ok for b in self.batches)


def dagster_instance(settings: Settings) -> dg.DagsterInstance:
    """The instance `dagster dev` opens: `DAGSTER_HOME` when set, else `{NEXTESY_HOME}/dagster`."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home)))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(_DAGSTER_YAML)
    return dg.DagsterInstance.get()


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        if materialization is not None and materialization.asset_key == dg.AssetKey(asset):
            return {k: v.value for k, v in materialization.metadata.items()}
    return {}


def _failure(result: dg.ExecuteInProcessResult) -> str:
    """Why a run failed, in the words of the check or step that stopped it."""
    blocked = [
        f"blocked by {e.asset_key.to_user_string()}:{e.check_name}: {e.description}"
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    ]
    if blocked:
        return "; ".join(blocked) + f" (run {result.run_id})"
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            error = event.step_failure_data.error
            user = event.step_failure_data.user_failure_data
            message = (user.description if user and user.description else None) or (
                error.message.strip() if error else "step failed"
            )
            return f"{event.step_key}: {message} (run {result.run_id})"
    return f"run {result.run_id} failed"


def pending_batches(settings: Settings, instance: dg.DagsterInstance) -> landing.LandingScan:
    """Landing files whose batch has not yet been through both the table and the quarantine."""
    done = set(instance.get_materialized_partitions(dg.AssetKey("iceberg_table"))) & set(
        instance.get_materialized_partitions(dg.AssetKey("quarantine"))
    )
    return landing.scan(settings, known=done)


def run_sync(
    settings: Settings,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    on_batch_start: Callable[[BatchRegistration, int, int], None] | None = None,
    on_batch_done: Callable[[BatchOutcome], None] | None = None,
) -> SyncSummary:
    """Ingest every new landing file, then bring the replica and the hot index up to date; a repeat does nothing."""
    summary = SyncSummary()
    scan = pending_batches(settings, instance)
    summary.unsupported = scan.unsupported
    known = set(instance.get_dynamic_partitions(props.BATCH_PARTITIONS))
    instance.add_dynamic_partitions(props.BATCH_PARTITIONS, [r.batch_id for r in scan.new if r.batch_id not in known])

    ingest_job = defs.resolve_job_def(props.INGEST_JOB)
    for number, registration in enumerate(scan.new, start=1):
        if on_batch_start is not None:
            on_batch_start(registration, number, len(scan.new))
        result = ingest_job.execute_in_process(
            partition_key=registration.batch_id,
            instance=instance,
            raise_on_error=False,
            run_config=QUIET_RUN_CONFIG,
            tags={"nextesy/trigger": "sync", "nextesy/landing-key": registration.key},
        )
        table = _metadata(result, "iceberg_table")
        outcome = BatchOutcome(
            batch_id=registration.batch_id,
            key=registration.key,
            ok=result.success,
            rows_in=int(table.get("rows_in", 0)),  # type: ignore[arg-type]
            rows_committed=int(table.get("rows_committed", 0)),  # type: ignore[arg-type]
            rows_quarantined=int(table.get("rows_quarantined", 0)),  # type: ignore[arg-type]
            error=None if result.success else _failure(result),
        )
        summary.batches.append(outcome)
        if on_batch_done is not None:
            on_batch_done(outcome)

    try:
        _sync_replica(settings, defs, instance, summary)
    except Exception as exc:
        if not (isinstance(exc, NextesyError) or is_store_failure(exc)):
            raise
        summary.replica_ok, summary.replica_error = False, f"{type(exc).__name__}: {exc}"
    _sync_hot_index(settings, defs, instance, summary)
    return summary


def _sync_hot_index(
    settings: Settings, defs: dg.Definitions, instance: dg.DagsterInstance, summary: SyncSummary
) -> None:
    """Run the hot index job unless the index reflects the current snapshot and today's window."""
    from datetime import UTC, datetime

    from .lib.hot.segments import read_manifest
    from .lib.hot.update import window_start

    manifest = read_manifest(Path(settings.hot_dir))
    first_day = window_start(datetime.now(UTC), settings.hot_window_days)
    if summary.source_snapshot_id is None or (
        manifest is not None
        and manifest.source_snapshot_id == summary.source_snapshot_id
        and manifest.window_start == first_day
        and manifest.window_days == settings.hot_window_days
    ):
        summary.hot_snapshot_id = manifest.source_snapshot_id if manifest else None
        return
    result = defs.resolve_job_def(props.HOT_INDEX_JOB).execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET_RUN_CONFIG, tags={"nextesy/trigger": "sync"}
    )
    summary.hot_ran = True
    summary.hot_ok = result.success
    summary.hot_metadata = _metadata(result, "hot_index")
    summary.hot_error = None if result.success else _failure(result)
    manifest = read_manifest(Path(settings.hot_dir))
    summary.hot_snapshot_id = manifest.source_snapshot_id if manifest else None


def _sync_replica(settings: Settings, defs: dg.Definitions, instance: dg.DagsterInstance, summary: SyncSummary) -> None:
    """Run the replica job unless the replica already reflects the source's current snapshot."""
    source = iceberg.embeddings_table(settings)
    current = source.current_snapshot()
    summary.source_snapshot_id = current.snapshot_id if current else None
    if current is None:
        return
    replica = replication.ensure_replica_table(settings, source)
    summary.watermark = replication.watermark(replica)
    if summary.watermark == current.snapshot_id:
        return
    result = defs.resolve_job_def(props.REPLICATE_JOB).execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET_RUN_CONFIG, tags={"nextesy/trigger": "sync"}
    )
    summary.replica_ran = True
    summary.replica_ok = result.success
    summary.replica_metadata = _metadata(result, "gcs_replica")
    summary.replica_error = None if result.success else _failure(result)
    replica.refresh()
    summary.watermark = replication.watermark(replica)
