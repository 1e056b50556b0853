"""The code location: Nextesy's assets, checks, sensors and jobs, bound to their resource."""

import dagster as dg

from dbt_like_checks.asset_checks import build_asset_checks

from .defs.assets import (
    gcs_replica,
    iceberg_table,
    parquet_batches,
    quarantine,
    raw_embeddings,
    rows_accounted_total,
)
from .defs.hot import hot_index, hot_index_job, hot_index_sensor
from .defs.jobs import ingest_job, replicate_job
from .defs.maintenance import sweep_job, sweep_schedule
from .defs.resources import NextesyResource
from .defs.sensors import landing_sensor, replica_sensor

defs = dg.Definitions(
    assets=[raw_embeddings, parquet_batches, iceberg_table, quarantine, gcs_replica, hot_index],
    # Declarative tests from dbt_like_checks/specs/*.yml; an invalid spec fails here, naming file and key.
    asset_checks=[rows_accounted_total, *build_asset_checks()],
    jobs=[ingest_job, replicate_job, hot_index_job, sweep_job],
    sensors=[landing_sensor, replica_sensor, hot_index_sensor],
    schedules=[sweep_schedule],
    # Every field unset: each falls back to its NEXTESY_* variable when a run needs it.
    resources={"nextesy": NextesyResource()},
)
