"""The lineage: raw_embeddings -> parquet_batches -> iceberg_table (+ quarantine) -> gcs_replica."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import dagster as dg

from ..lib import batches, expectations, iceberg, ingest, quality, replication
from ..lib import properties as props
from ..lib import rules as rules_lib
from ..lib.errors import TerminalError, UnsupportedFormatError
from ..lib.schema import embeddings_arrow
from .partitions import batch_partitions
from .resources import NextesyResource

if TYPE_CHECKING:
    from pyiceberg.table import Table

GROUP = "embeddings"
ROWS_ACCOUNTED = "rows_accounted"
REPLICA_PARITY = "replica_parity"
REPLICA_LAG = "replica_lag"


@contextmanager
def fail_fast_on_terminal_errors() -> Iterator[None]:
    """A terminal error (bad file, bad setting) fails the step without the retries a transient one gets."""
    try:
        yield
    except TerminalError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


def rule_specs(asset: str, rules: tuple[rules_lib.Rule, ...]) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(r.name, asset=asset, blocking=r.blocking, description=r.description) for r in rules]


def check_results(outcomes: list[rules_lib.Outcome]) -> list[dg.AssetCheckResult]:
    """Outcomes as check results: warn-only rules fail with WARN, every other rule with ERROR."""
    return [
        dg.AssetCheckResult(
            check_name=o.rule,
            passed=o.passed,
            severity=dg.AssetCheckSeverity.WARN if o.warn_only else dg.AssetCheckSeverity.ERROR,
            description=o.description,
            metadata=o.metadata,
        )
        for o in outcomes
    ]


def _manifest(nextesy: NextesyResource, batch_id: str) -> ingest.BatchManifest:
    manifest = ingest.load_manifest(nextesy.settings(), batch_id)
    if manifest is None:
        raise dg.Failure(
            description=f"no manifest for batch {batch_id=}: materialize parquet_batches for it first",
            allow_retries=False,
        )
    return manifest


@dg.asset(
    partitions_def=batch_partitions,
    group_name=GROUP,
    kinds={"s3", "json"},
    check_specs=rule_specs("raw_embeddings", rules_lib.RAW_RULES),
    description="A landing file as it arrived: format, size, checksum and record count.",
)
def raw_embeddings(context: dg.AssetExecutionContext, nextesy: NextesyResource) -> dg.MaterializeResult:
    started = time.perf_counter()
    with fail_fast_on_terminal_errors():
        registration = batches.lookup(nextesy.settings(), context.partition_key)
        thresholds = nextesy.thresholds()
        try:
            fmt_ok, fmt_detail = True, batches.detect_format(registration.key)
        except UnsupportedFormatError as exc:
            fmt_ok, fmt_detail = False, str(exc)
        info = ingest.inspect_landing(registration)
    records, damaged = (info.records, info.damaged) if fmt_ok else (0, None)
    metadata: dict[str, object] = {
        "source": dg.MetadataValue.path(registration.uri),
        "format": registration.format,
        "etag": registration.etag,
        "bytes": info.size,
        "sha256": info.sha256,
        "records": records,
        "duration_s": round(time.perf_counter() - started, 3),
    }
    if registration.sidecar_uri is not None:
        metadata["sidecar"] = dg.MetadataValue.path(registration.sidecar_uri)
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=check_results(rules_lib.judge_raw(fmt_ok, fmt_detail, info.size, records, damaged, thresholds)),
    )


@dg.asset(
    partitions_def=batch_partitions,
    group_name=GROUP,
    deps=[raw_embeddings],
    kinds={"rust", "parquet"},
    check_specs=rule_specs("parquet_batches", rules_lib.BATCH_RULES),
    description="The batch parsed and validated, its good rows written as Parquet into the table's data "
    "location (one file per day), its rejected records kept for the quarantine.",
)
def parquet_batches(context: dg.AssetExecutionContext, nextesy: NextesyResource) -> dg.MaterializeResult:
    settings = nextesy.settings()
    batch_id = context.partition_key
    with fail_fast_on_terminal_errors():
        table = iceberg.embeddings_table(settings)
        committed = iceberg.find_batch_snapshot(table, batch_id)
        manifest = ingest.load_manifest(settings, batch_id) if committed else None
        if manifest is None:
            manifest = ingest.convert_batch(settings, batches.lookup(settings, batch_id), table.location())
        else:
            # Write once: files an Iceberg snapshot already references are never written again.
            context.log.info(f"batch {batch_id} is already in snapshot {committed.snapshot_id}; not rewriting it")
        outcomes = judge_batch_quality(nextesy, table, manifest)
    return dg.MaterializeResult(
        check_results=check_results(outcomes),
        metadata={
            "rows_in": manifest.rows_in,
            "rows_good": manifest.rows_good,
            "rows_quarantined": manifest.rows_rejected,
            "reasons": dg.MetadataValue.json(manifest.reasons),
            "files": len(manifest.data_files),
            "bytes_in": manifest.input_bytes,
            "bytes": manifest.output_bytes,
            "bytes_per_vector": round(manifest.output_bytes / manifest.rows_good, 1) if manifest.rows_good else 0.0,
            "norm_mean": manifest.norm_mean if manifest.norm_mean is not None else float("nan"),
            "duration_s": manifest.duration_s,
            "engine": manifest.engine,
            "rewritten": committed is None,
        },
    )


def judge_batch_quality(
    nextesy: NextesyResource, table: "Table", manifest: ingest.BatchManifest
) -> list[rules_lib.Outcome]:
    """Profile the files the batch really wrote, compare with recent batches, run the expectation suite."""
    settings, thresholds = nextesy.settings(), nextesy.thresholds()
    profile = quality.profile_batch(
        [f.uri for f in manifest.data_files], settings.dims, thresholds, embeddings_arrow(settings.extra_columns)
    )
    earlier = [b for b in iceberg.committed_batches(table) if b != manifest.batch_id]
    reference = [
        stats
        for batch in earlier[-thresholds.drift_reference_batches :]
        if (stats := quality.load_stats(settings, batch)) is not None
    ]
    quality.save_stats(settings, manifest.batch_id, profile.models)
    report = expectations.validate_batch(profile.scalars, thresholds) if profile.scalars is not None else None
    return rules_lib.judge_batch(
        manifest, profile, settings.dims, thresholds, quality.drift(profile.models, reference), report
    )


@dg.asset(
    partitions_def=batch_partitions,
    group_name=GROUP,
    deps=[parquet_batches],
    kinds={"iceberg"},
    pool=props.COMMIT_POOL,
    check_specs=[dg.AssetCheckSpec(ROWS_ACCOUNTED, asset="iceberg_table", blocking=True)],
    description="Iceberg table nextesy.embeddings: each batch's files registered in one snapshot "
    "(add_files, no rewrite), exactly once, keyed by nextesy.batch-id.",
)
def iceberg_table(context: dg.AssetExecutionContext, nextesy: NextesyResource) -> dg.MaterializeResult:
    started = time.perf_counter()
    settings = nextesy.settings()
    batch_id = context.partition_key
    manifest = _manifest(nextesy, batch_id)
    with fail_fast_on_terminal_errors():
        table = iceberg.embeddings_table(settings)
    snapshot_id, new_commit = None, False
    if manifest.data_files:
        snapshot_id, new_commit = iceberg.commit_data_files(
            table, batch_id, [f.uri for f in manifest.data_files], manifest.rows_good, manifest.rows_in
        )
    snapshot = table.snapshot_by_id(snapshot_id) if snapshot_id is not None else None
    committed = int(snapshot.summary["added-records"] or 0) if snapshot and snapshot.summary else 0
    accounted = committed + manifest.rows_rejected == manifest.rows_in
    return dg.MaterializeResult(
        metadata={
            "table": "nextesy.embeddings",
            "rows_in": manifest.rows_in,
            "rows_committed": committed,
            "rows_quarantined": manifest.rows_rejected,
            "bytes": manifest.output_bytes,
            "files": len(manifest.data_files),
            "snapshot_id": str(snapshot_id) if snapshot_id is not None else "none (no good rows)",
            "new_commit": new_commit,
            "duration_s": round(time.perf_counter() - started, 3),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=ROWS_ACCOUNTED,
                passed=accounted,
                severity=dg.AssetCheckSeverity.ERROR,
                description=None
                if accounted
                else f"rows in {manifest.rows_in} != committed {committed} + quarantined {manifest.rows_rejected}",
                metadata={
                    "rows_in": manifest.rows_in,
                    "rows_committed": committed,
                    "rows_quarantined": manifest.rows_rejected,
                },
            )
        ],
    )


@dg.asset(
    partitions_def=batch_partitions,
    group_name=GROUP,
    deps=[parquet_batches],
    kinds={"iceberg"},
    pool=props.COMMIT_POOL,
    description="Iceberg table nextesy.quarantine: every rejected record with a stable reason code, "
    "its position in the landing file and its raw text (dead-letter queue).",
)
def quarantine(context: dg.AssetExecutionContext, nextesy: NextesyResource) -> dg.MaterializeResult:
    settings = nextesy.settings()
    batch_id = context.partition_key
    manifest = _manifest(nextesy, batch_id)
    table = iceberg.ensure_quarantine_table(nextesy.source_catalog(), settings.warehouse_uri)
    snapshot_id, new_commit = None, False
    if manifest.rows_rejected:
        snapshot_id, new_commit = iceberg.append_rows(table, batch_id, ingest.read_rejects(manifest), manifest.rows_in)
    return dg.MaterializeResult(
        metadata={
            "table": "nextesy.quarantine",
            "rows_quarantined": manifest.rows_rejected,
            "reasons": dg.MetadataValue.json(manifest.reasons),
            "snapshot_id": str(snapshot_id) if snapshot_id is not None else "none (no rejects)",
            "new_commit": new_commit,
        }
    )


@dg.asset(
    group_name=GROUP,
    deps=[iceberg_table],
    kinds={"gcs", "iceberg"},
    pool=props.REPLICA_POOL,
    check_specs=[
        dg.AssetCheckSpec(REPLICA_PARITY, asset="gcs_replica"),
        dg.AssetCheckSpec(
            REPLICA_LAG, asset="gcs_replica", description="Replica lag within NEXTESY_REPLICA_MAX_LAG_S."
        ),
    ],
    description="Exact replica of nextesy.embeddings on GCS: the source snapshot's live files copied and "
    "checksum-verified, then one replica commit carrying nextesy.source-snapshot-id.",
)
def gcs_replica(context: dg.AssetExecutionContext, nextesy: NextesyResource) -> dg.MaterializeResult:
    settings = nextesy.settings()
    with fail_fast_on_terminal_errors():
        result = replication.replicate(settings, on_file=lambda rel, size: context.log.debug(f"verified {rel}"))
        parity = replication.parity(settings)
        max_lag = nextesy.thresholds().max_replica_lag_s
    seconds = max(result.duration_s, 1e-9)
    return dg.MaterializeResult(
        metadata={
            "source_snapshot_id": str(result.source_snapshot_id),
            "replica_snapshot_id": str(result.replica_snapshot_id),
            "up_to_date_before": result.up_to_date,
            "rows": result.rows,
            "files_copied": result.files_copied,
            "files_reused": result.files_reused,
            "files_removed": result.files_removed,
            "bytes_moved": result.bytes_copied,
            "throughput_mb_s": round(result.bytes_copied / seconds / 1e6, 2),
            "lag_snapshots_before": result.lag_snapshots,
            "lag_seconds_before": result.lag_seconds,
            "egress_usd": round(result.egress_usd(nextesy.egress_usd_per_gb), 6),
            "duration_s": result.duration_s,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=REPLICA_PARITY,
                passed=parity.ok,
                description=parity.describe(),
                metadata={
                    "source_snapshot_id": str(parity.source_snapshot_id),
                    "watermark": str(parity.watermark),
                    "source_rows": parity.source_rows,
                    "replica_rows": parity.replica_rows,
                    "source_files": parity.source_files,
                    "replica_files": parity.replica_files,
                    "mismatched_files": len(parity.mismatched),
                },
            ),
            dg.AssetCheckResult(
                check_name=REPLICA_LAG,
                passed=parity.lag_seconds <= max_lag,
                description=f"{parity.lag_snapshots} snapshots and {parity.lag_seconds:.0f} s behind the source "
                f"(limit {max_lag} s); before this run: {result.lag_snapshots} snapshots, {result.lag_seconds:.0f} s",
                metadata={
                    "lag_snapshots": parity.lag_snapshots,
                    "lag_seconds": parity.lag_seconds,
                    "lag_snapshots_before": result.lag_snapshots,
                    "lag_seconds_before": result.lag_seconds,
                    "max_lag_seconds": max_lag,
                },
            ),
        ],
    )


@dg.asset_check(
    asset=iceberg_table,
    additional_deps=[quarantine],
    name="rows_accounted_total",
    description="For every batch in the tables and in total: rows in = rows committed + rows quarantined, "
    "and the totals equal the rows the two tables hold (from snapshot summaries, no data read).",
)
def rows_accounted_total(nextesy: NextesyResource) -> dg.AssetCheckResult:
    settings = nextesy.settings()
    catalog = nextesy.source_catalog()
    result = iceberg.reconcile(
        iceberg.embeddings_table(settings),
        iceberg.ensure_quarantine_table(catalog, settings.warehouse_uri),
    )
    unbalanced = "; ".join(f"{b}: in {i} != {c} + {q}" for b, (i, c, q) in list(result.unbalanced.items())[:5])
    return dg.AssetCheckResult(
        passed=result.ok,
        description=f"{result.batches} batches: {result.rows_in} rows in = {result.rows_committed} committed + "
        f"{result.rows_quarantined} quarantined; tables hold {result.table_rows} and {result.quarantine_rows}"
        + (f"; unbalanced: {unbalanced}" if unbalanced else ""),
        metadata={
            "batches": result.batches,
            "rows_in": result.rows_in,
            "rows_committed": result.rows_committed,
            "rows_quarantined": result.rows_quarantined,
            "table_rows": result.table_rows,
            "quarantine_rows": result.quarantine_rows,
            "unbalanced_batches": len(result.unbalanced),
        },
    )
