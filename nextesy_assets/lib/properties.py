"""Every property, summary and option key Nextesy writes, named once."""

from __future__ import annotations

NAMESPACE = "nextesy"
EMBEDDINGS_TABLE = "embeddings"
QUARANTINE_TABLE = "quarantine"

# Snapshot summary properties: the idempotency keys live in the data, not in process memory.
BATCH_ID = "nextesy.batch-id"
BATCH_ROWS = "nextesy.batch-rows"
BATCH_ROWS_IN = "nextesy.batch-rows-in"
SOURCE_SNAPSHOT_ID = "nextesy.source-snapshot-id"
SOURCE_SNAPSHOT_TS = "nextesy.source-snapshot-timestamp-ms"

# Table properties.
VECTOR_DIMS = "nextesy.vector-dims"

# Catalog names looked up in pyiceberg's own configuration (.pyiceberg.yaml, PYICEBERG_CATALOG__*).
SOURCE_CATALOG = "source"
REPLICA_CATALOG = "replica"

# Dagster names.
BATCH_PARTITIONS = "batches"
INGEST_JOB = "ingest_batch"
REPLICATE_JOB = "replicate"
COMMIT_POOL = "nextesy_iceberg_commit"
REPLICA_POOL = "nextesy_replica_commit"
HOT_INDEX_JOB = "update_hot_index"
HOT_POOL = "nextesy_hot_index"
