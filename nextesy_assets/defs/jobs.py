"""Jobs the sensors (and `nextesy sync`) launch."""

import dagster as dg

from ..lib import properties as props
from .assets import gcs_replica, iceberg_table, parquet_batches, quarantine, raw_embeddings

# Transient faults (a dropped connection, a commit conflict) get a few tries with backoff and jitter;
# terminal ones fail fast through dg.Failure(allow_retries=False).
RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)

ingest_job = dg.define_asset_job(
    props.INGEST_JOB,
    selection=dg.AssetSelection.assets(raw_embeddings, parquet_batches, iceberg_table, quarantine),
    op_retry_policy=RETRY_POLICY,
    description="One landing file through parsing, validation and the Iceberg commit.",
)

replicate_job = dg.define_asset_job(
    props.REPLICATE_JOB,
    selection=dg.AssetSelection.assets(gcs_replica),
    op_retry_policy=RETRY_POLICY,
    description="Bring the GCS replica to the source table's current snapshot.",
)
