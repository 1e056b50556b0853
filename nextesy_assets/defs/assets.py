"""The lineage: raw_embeddings -> parquet_batches -> iceberg_table (+ quarantine) -> gcs_replica."""

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from ..lib import batches, iceberg, ingest, replication
from ..lib import properties as props
from ..lib.errors import TerminalError
from .partitions import batch_partitions
from .resources import NextesyResource

GROUP = "embeddings"
ROWS_ACCOUNTED = "rows_accounted"
REPLICA_PARITY = "replica_parity"


@contextmanager
def fail_fast_on_terminal_errors() -> Iterator[None]:
    """A terminal error (bad file, bad setting) fails the step without the retries a transient one gets."""
    try:
        yield
    except TerminalError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


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
    description="A landing file as it arrived: format, size, checksum and record count.",
)
def raw_embeddings(context: dg.AssetExecutionContext, nextesy: NextesyResource) -> dg.MaterializeResult:
    with fail_fast_on_terminal_errors():
        registration = batches.lookup(nextesy.settings(), context.partition_key)
        data = ingest.read_landing(registration)
    return dg.MaterializeResult(
        metadata={
            "source": dg.MetadataValue.path(registration.uri),
            "format": registration.format,
            "etag": registration.etag,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "records": ingest.count_records(data, registration.format),
        }
    )


@dg.asset(
    partitions_def=batch_partitions,
    group_name=GROUP,
    deps=[raw_embeddings],
    kinds={"rust", "parquet"},
    description="The batch parsed and validated, its good rows written as Parquet into the table's data "
    "location (one file per day), its rejected records kept for the quarantine.",
)
def parquet_batches(context: dg.AssetExecutionContext, nextesy: NextesyResource) -> dg.MaterializeResult:
    settings = nextesy.settings()
    batch_id = context.partition_key
    with fail_fast_on_terminal_errors():
        table = iceberg.ensure_embeddings_table(nextesy.source_catalog(), settings.warehouse_uri, settings.dims)
        committed = iceberg.find_batch_snapshot(table, batch_id)
        manifest = ingest.load_manifest(settings, batch_id) if committed else None
        if manifest is None:
            manifest = ingest.convert_batch(settings, batches.lookup(settings, batch_id), table.location())
        else:
            # Write once: files an Iceberg snapshot already references are never written again.
            context.log.info(f"batch {batch_id} is already in snapshot {committed.snapshot_id}; not rewriting it")
    return dg.MaterializeResult(
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
            "rewritten": committed is None,
        }
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
        table = iceberg.ensure_embeddings_table(nextesy.source_catalog(), settings.warehouse_uri, settings.dims)
    snapshot_id, new_commit = None, False
    if manifest.data_files:
        snapshot_id, new_commit = iceberg.commit_data_files(
            table, batch_id, [f.uri for f in manifest.data_files], manifest.rows_good
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
        snapshot_id, new_commit = iceberg.append_rows(table, batch_id, ingest.read_rejects(manifest))
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
    check_specs=[dg.AssetCheckSpec(REPLICA_PARITY, asset="gcs_replica")],
    description="Exact replica of nextesy.embeddings on GCS: the source snapshot's live files copied and "
    "checksum-verified, then one replica commit carrying nextesy.source-snapshot-id.",
)
def gcs_replica(context: dg.AssetExecutionContext, nextesy: NextesyResource) -> dg.MaterializeResult:
    settings = nextesy.settings()
    with fail_fast_on_terminal_errors():
        result = replication.replicate(settings, on_file=lambda rel, size: context.log.debug(f"verified {rel}"))
        parity = replication.parity(settings)
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
            "lag_snapshots": result.lag_snapshots,
            "lag_seconds": result.lag_seconds,
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
            )
        ],
    )
