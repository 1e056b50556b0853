"""The hot tier's wiring: hot_index follows iceberg_table, with parity, recall and staleness checks."""

from pathlib import Path

import dagster as dg

from ..lib import iceberg
from ..lib import properties as props
from ..lib.hot import checks as hot_checks
from ..lib.hot.search import HotIndex
from ..lib.hot.update import update
from .assets import GROUP, fail_fast_on_terminal_errors, iceberg_table
from .jobs import RETRY_POLICY
from .resources import NextesyResource

HOT_PARITY = "hot_parity"
HOT_RECALL = "hot_recall"
HOT_STALENESS = "hot_staleness"


@dg.asset(
    group_name=GROUP,
    deps=[iceberg_table],
    kinds={"faiss", "numpy"},
    pool=props.HOT_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            HOT_PARITY,
            asset="hot_index",
            description="Rows of the window in the table = vectors in the index, and the same data files.",
        ),
        dg.AssetCheckSpec(
            HOT_RECALL,
            asset="hot_index",
            description="recall@10 against exact search on a sample, at least NEXTESY_HOT_MIN_RECALL.",
        ),
        dg.AssetCheckSpec(
            HOT_STALENESS,
            asset="hot_index",
            description="Snapshots and seconds behind the table, within NEXTESY_HOT_MAX_LAG_S.",
        ),
    ],
    description="ANN index (FAISS HNSW) over the last NEXTESY_HOT_WINDOW_DAYS days of nextesy.embeddings, one "
    "graph per model: rows of the snapshot diff's new data files added, days out of the window masked (and "
    "dropped when the graph is rebuilt); served by `nextesy serve`.",
)
def hot_index(context: dg.AssetExecutionContext, nextesy: NextesyResource) -> dg.MaterializeResult:
    settings = nextesy.settings()
    with fail_fast_on_terminal_errors():
        table = iceberg.embeddings_table(settings)
        result = update(settings, table=table)
        thresholds = nextesy.thresholds()
    index = HotIndex(Path(settings.hot_dir), settings.hot_ef_search, settings.hot_walk)  # judged as it is served
    parity = hot_checks.parity(table, index)
    recall = hot_checks.recall_at_k(index)
    lag = hot_checks.staleness(table, index.manifest)
    context.log.info(f"hot index at snapshot {result.source_snapshot_id}: {result.rows} vectors")
    return dg.MaterializeResult(
        metadata={
            "source_snapshot_id": str(result.source_snapshot_id),
            "previous_snapshot_id": str(result.previous_snapshot_id),
            "up_to_date_before": result.up_to_date,
            "files_read": result.files_read,
            "rows_added": result.rows_added,
            "rows_evicted": result.rows_evicted,
            "vectors": result.rows,
            "segments": result.segments,
            "window_days": settings.hot_window_days,
            "duration_s": result.duration_s,
            "visible_after_s": result.visible_s,
            "path": dg.MetadataValue.path(settings.hot_dir),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=HOT_PARITY,
                passed=parity.ok,
                description=f"window holds {parity.table_rows} rows in {parity.table_files} files; index "
                f"{parity.index_rows} vectors from {parity.index_files} files "
                f"({parity.missing_files} missing, {parity.extra_files} extra)",
                metadata={
                    "table_rows": parity.table_rows,
                    "index_rows": parity.index_rows,
                    "table_files": parity.table_files,
                    "index_files": parity.index_files,
                    "missing_files": parity.missing_files,
                    "extra_files": parity.extra_files,
                },
            ),
            dg.AssetCheckResult(
                check_name=HOT_RECALL,
                passed=recall.recall >= thresholds.min_hot_recall,
                description=f"recall@{recall.k} {recall.recall:.3f} on {recall.queries} queries "
                f"(minimum {thresholds.min_hot_recall})",
                metadata={
                    "recall": recall.recall,
                    "queries": recall.queries,
                    "k": recall.k,
                    "min_recall": thresholds.min_hot_recall,
                },
            ),
            dg.AssetCheckResult(
                check_name=HOT_STALENESS,
                passed=lag.seconds <= thresholds.max_hot_lag_s,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"{lag.snapshots} snapshots and {lag.seconds:.0f} s behind the table "
                f"(limit {thresholds.max_hot_lag_s} s)",
                metadata={
                    "lag_snapshots": lag.snapshots,
                    "lag_seconds": lag.seconds,
                    "max_lag_seconds": thresholds.max_hot_lag_s,
                },
            ),
        ],
    )


hot_index_job = dg.define_asset_job(
    props.HOT_INDEX_JOB,
    selection=dg.AssetSelection.assets(hot_index),
    op_retry_policy=RETRY_POLICY,
    description="Bring the hot index to the table's current snapshot and window.",
)


@dg.asset_sensor(
    asset_key=dg.AssetKey("iceberg_table"),
    job=hot_index_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts a hot index update after the source table is materialized.",
)
def hot_index_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry) -> dg.RunRequest:
    # Each update targets the table's newest snapshot, so one run covers every commit since the last tick.
    event_ms = int(asset_event.timestamp * 1000)
    return dg.RunRequest(run_key=f"hot-{asset_event.run_id or 'runless'}-{event_ms}")
