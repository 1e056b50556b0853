"""The code location loads, its keys are pinned, and loading it does no I/O."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from nextesy_assets.definitions import defs
from nextesy_assets.lib import properties as props


def test_asset_and_check_keys_are_pinned() -> None:
    graph = defs.resolve_asset_graph()
    assert sorted(k.to_user_string() for k in graph.get_all_asset_keys()) == [
        "gcs_replica",
        "hot_index",
        "iceberg_table",
        "parquet_batches",
        "quarantine",
        "raw_embeddings",
    ]
    assert sorted(k.to_user_string() for k in graph.asset_check_keys) == [
        "gcs_replica:replica_lag",
        "gcs_replica:replica_parity",
        "hot_index:hot_parity",
        "hot_index:hot_recall",
        "hot_index:hot_staleness",
        "iceberg_table:event_time_plausible",
        "iceberg_table:fresh",
        "iceberg_table:has_rows",
        "iceberg_table:no_events_from_the_future",
        "iceberg_table:one_dimension_per_model",
        "iceberg_table:required_not_null",
        "iceberg_table:rows_accounted",
        "iceberg_table:rows_accounted_total",
        "iceberg_table:unique_key",
        "parquet_batches:drift",
        "parquet_batches:duplicate_vectors",
        "parquet_batches:expectations",
        "parquet_batches:finite_values",
        "parquet_batches:no_zero_vectors",
        "parquet_batches:norm_band",
        "parquet_batches:reject_ratio",
        "parquet_batches:schema",
        "parquet_batches:vector_dims",
        "quarantine:known_reasons",
        "quarantine:located",
        "quarantine:one_entry_per_record",
        "raw_embeddings:readable",
        "raw_embeddings:recognised_format",
        "raw_embeddings:within_limits",
    ]
    blocking = {k.to_user_string() for k in graph.asset_check_keys if graph.get_check_spec(k).blocking}
    assert blocking == {
        "iceberg_table:rows_accounted",
        "parquet_batches:finite_values",
        "parquet_batches:no_zero_vectors",
        "parquet_batches:norm_band",
        "parquet_batches:reject_ratio",
        "parquet_batches:schema",
        "parquet_batches:vector_dims",
        "raw_embeddings:recognised_format",
        "raw_embeddings:within_limits",
    }


def test_jobs_sensors_and_lineage() -> None:
    assert {j.name for j in defs.resolve_all_job_defs()} >= {props.INGEST_JOB, props.REPLICATE_JOB, props.HOT_INDEX_JOB}
    assert sorted(s.name for s in defs.sensors or []) == ["hot_index_sensor", "landing_sensor", "replica_sensor"]
    graph = defs.resolve_asset_graph()

    def parents(key: str) -> set[str]:
        return {p.to_user_string() for p in graph.get(dg.AssetKey(key)).parent_keys}

    assert parents("parquet_batches") == {"raw_embeddings"}
    assert parents("iceberg_table") == {"parquet_batches"}
    assert parents("quarantine") == {"parquet_batches"}
    assert parents("gcs_replica") == {"iceberg_table"}
    assert parents("hot_index") == {"iceberg_table"}
    partitioned = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).partitions_def}
    assert partitioned == {"raw_embeddings", "parquet_batches", "iceberg_table", "quarantine"}


def test_loading_the_definitions_does_no_io(tmp_path: Path) -> None:
    """Import in a fresh interpreter whose environment points at paths that must stay untouched."""
    script = """
import json, sys
import nextesy_assets.definitions as d
d.defs.resolve_asset_graph()
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("pyiceberg.catalog", "boto3", "google.cloud")))))
"""
    env = {**os.environ, "NEXTESY_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster")}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    assert list(tmp_path.iterdir()) == []
