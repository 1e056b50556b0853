"""The asset graph materialized into a temporary NEXTESY_HOME: nothing lost, exactly once, exact replica."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from nextesy_assets.defs.assets import gcs_replica, iceberg_table, parquet_batches, quarantine, raw_embeddings
from nextesy_assets.defs.resources import NextesyResource
from nextesy_assets.lib import iceberg, landing, replication
from nextesy_assets.lib import properties as props
from nextesy_assets.lib.settings import Settings

from .conftest import good_record, write_records

INGEST = [raw_embeddings, parquet_batches, iceberg_table, quarantine]
RESOURCES = {"nextesy": NextesyResource()}


@pytest.fixture
def instance(home: Path) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        yield instance


def register(settings: Settings, instance: dg.DagsterInstance) -> list[str]:
    known = set(instance.get_dynamic_partitions(props.BATCH_PARTITIONS))
    new = [r.batch_id for r in landing.scan(settings, known=known).new]
    instance.add_dynamic_partitions(props.BATCH_PARTITIONS, new)
    return new


def ingest(batch_id: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    result = dg.materialize(INGEST, partition_key=batch_id, instance=instance, resources=RESOURCES)
    assert result.success
    return result


def replicate(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    result = dg.materialize([gcs_replica], instance=instance, resources=RESOURCES)
    assert result.success
    return result


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def check(result: dg.ExecuteInProcessResult, asset: str, name: str):  # type: ignore[no-untyped-def]
    [evaluation] = [
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_check_key == dg.AssetCheckKey(dg.AssetKey(asset), name)
    ]
    return evaluation


def tables(settings: Settings):  # type: ignore[no-untyped-def]
    catalog = iceberg.source_catalog(settings)
    return (
        iceberg.embeddings_table(settings),
        iceberg.ensure_quarantine_table(catalog, settings.warehouse_uri),
    )


def test_nothing_lost_every_rejected_record_has_its_reason(
    settings: Settings, instance: dg.DagsterInstance, batch_with_every_reason: tuple[Path, int, dict[str, int]]
) -> None:
    _, good, reasons = batch_with_every_reason
    [batch_id] = register(settings, instance)
    result = ingest(batch_id, instance)

    table_meta = metadata(result, "iceberg_table")
    rows_in = sum(reasons.values()) + good
    assert table_meta["rows_in"] == rows_in
    assert table_meta["rows_committed"] == good
    assert table_meta["rows_quarantined"] == sum(reasons.values())
    assert table_meta["files"] == 3  # three event days, one file each
    accounted = check(result, "iceberg_table", "rows_accounted")
    assert accounted.passed and accounted.metadata["rows_in"].value == rows_in

    embeddings, quarantined = tables(settings)
    rows = embeddings.scan().to_arrow()
    assert rows.num_rows == good
    assert sorted(rows["id"].to_pylist()) == sorted(f"doc-{i}" for i in range(good))
    assert set(rows["batch_id"].to_pylist()) == {batch_id}
    rejects = quarantined.scan().to_arrow().to_pylist()
    counted: dict[str, int] = {}
    for reject in rejects:
        counted[reject["reason"]] = counted.get(reject["reason"], 0) + 1
        assert reject["batch_id"] == batch_id and reject["detail"]
    assert counted == reasons
    assert rows.num_rows + len(rejects) == rows_in

    snapshot = embeddings.current_snapshot()
    assert snapshot.summary[props.BATCH_ID] == batch_id
    assert metadata(result, "iceberg_table")["snapshot_id"] == str(snapshot.snapshot_id)


def test_data_files_are_written_once_partitioned_by_day_with_byte_stream_split(
    settings: Settings, instance: dg.DagsterInstance, batch_with_every_reason: tuple[Path, int, dict[str, int]]
) -> None:
    [batch_id] = register(settings, instance)
    ingest(batch_id, instance)
    embeddings, _ = tables(settings)
    files = replication.live_files(embeddings)
    assert sorted(files) == [f"data/ts_day=2026-11-{d}/{batch_id}.parquet" for d in (20, 21, 22)]
    for relative, data_file in files.items():
        day = relative.split("ts_day=")[1][:10]
        assert str(data_file.partition[0]) and data_file.record_count > 0
        parquet = pq.ParquetFile(data_file.file_path)
        vector_column = parquet.metadata.row_group(0).column(2)
        assert vector_column.path_in_schema == "vector.list.element"
        assert "BYTE_STREAM_SPLIT" in vector_column.encodings
        assert vector_column.compression == "ZSTD"
        ts = parquet.read(columns=["ts"])["ts"].to_pylist()
        assert {t.date().isoformat() for t in ts} == {day}
    # Re-running the batch must not rewrite a committed file (write once).
    before = {p: Path(f.file_path).stat().st_mtime_ns for p, f in files.items()}
    result = ingest(batch_id, instance)
    assert metadata(result, "parquet_batches")["rewritten"] is False
    assert {p: Path(f.file_path).stat().st_mtime_ns for p, f in files.items()} == before


def test_exactly_once_rerunning_a_batch_adds_no_rows_and_no_snapshots(
    settings: Settings, instance: dg.DagsterInstance, batch_with_every_reason: tuple[Path, int, dict[str, int]]
) -> None:
    _, good, reasons = batch_with_every_reason
    [batch_id] = register(settings, instance)
    ingest(batch_id, instance)
    embeddings, quarantined = tables(settings)
    snapshots = (len(embeddings.metadata.snapshots), len(quarantined.metadata.snapshots))

    again = ingest(batch_id, instance)
    assert metadata(again, "iceberg_table")["new_commit"] is False
    assert metadata(again, "quarantine")["new_commit"] is False
    embeddings, quarantined = tables(settings)
    assert (len(embeddings.metadata.snapshots), len(quarantined.metadata.snapshots)) == snapshots
    assert embeddings.scan().to_arrow().num_rows == good
    assert quarantined.scan().to_arrow().num_rows == sum(reasons.values())
    assert register(settings, instance) == []  # the same file is not a new batch


def test_a_new_file_adds_exactly_its_rows(settings: Settings, instance: dg.DagsterInstance, home: Path) -> None:
    write_records(home / "landing" / "first.jsonl", [good_record(i) for i in range(10)])
    [first] = register(settings, instance)
    ingest(first, instance)
    write_records(home / "landing" / "second.jsonl", [good_record(i, day=23) for i in range(100, 107)])
    [second] = register(settings, instance)
    assert second != first
    ingest(second, instance)
    embeddings, _ = tables(settings)
    rows = embeddings.scan().to_arrow()
    assert rows.num_rows == 17
    assert rows["batch_id"].to_pylist().count(second) == 7


def test_an_empty_file_is_a_batch_of_zero_rows(settings: Settings, instance: dg.DagsterInstance, home: Path) -> None:
    (home / "landing").mkdir(parents=True)
    (home / "landing" / "empty.jsonl").write_bytes(b"")
    [batch_id] = register(settings, instance)
    result = ingest(batch_id, instance)
    assert metadata(result, "iceberg_table")["rows_in"] == 0
    embeddings, _ = tables(settings)
    assert embeddings.current_snapshot() is None


def test_the_replica_equals_the_source(
    settings: Settings, instance: dg.DagsterInstance, batch_with_every_reason: tuple[Path, int, dict[str, int]]
) -> None:
    [batch_id] = register(settings, instance)
    ingest(batch_id, instance)
    result = replicate(instance)
    parity = check(result, "gcs_replica", "replica_parity")
    assert parity.passed, parity.description
    lag = check(result, "gcs_replica", "replica_lag")
    assert lag.passed and lag.metadata["lag_snapshots"].value == 0 and lag.metadata["lag_snapshots_before"].value == 1

    embeddings, _ = tables(settings)
    replica = replication.ensure_replica_table(settings, embeddings)
    source_snapshot = embeddings.current_snapshot().snapshot_id
    assert replication.watermark(replica) == source_snapshot
    assert replica.current_snapshot().summary[props.SOURCE_SNAPSHOT_ID] == str(source_snapshot)
    assert replica.schema() == embeddings.schema() and replica.spec() == embeddings.spec()

    source_rows = embeddings.scan().to_arrow().sort_by("id")
    replica_rows = replica.scan().to_arrow().sort_by("id")
    assert replica_rows.equals(source_rows)

    def digests(table) -> dict[str, str]:  # type: ignore[no-untyped-def]
        return {
            rel: hashlib.sha256(Path(f.file_path).read_bytes()).hexdigest()
            for rel, f in replication.live_files(table).items()
        }

    assert digests(replica) == digests(embeddings)
    assert all(f.file_path.startswith(settings.replica_uri) for f in replication.live_files(replica).values())
    meta = metadata(result, "gcs_replica")
    assert meta["files_copied"] == 3 and meta["bytes_moved"] > 0


def test_replication_is_incremental_and_a_repeat_changes_nothing(
    settings: Settings, instance: dg.DagsterInstance, home: Path
) -> None:
    write_records(home / "landing" / "one.jsonl", [good_record(i) for i in range(5)])
    [first] = register(settings, instance)
    ingest(first, instance)
    replicate(instance)
    embeddings, _ = tables(settings)
    replica = replication.ensure_replica_table(settings, embeddings)
    replica_snapshots = len(replica.metadata.snapshots)

    repeat = replicate(instance)
    assert metadata(repeat, "gcs_replica")["bytes_moved"] == 0
    replica.refresh()
    assert len(replica.metadata.snapshots) == replica_snapshots

    write_records(home / "landing" / "two.jsonl", [good_record(i, day=22) for i in range(50, 53)])
    [second] = register(settings, instance)
    ingest(second, instance)
    new_file = next(f for rel, f in replication.live_files(tables(settings)[0]).items() if second in rel)
    result = replicate(instance)
    meta = metadata(result, "gcs_replica")
    assert meta["files_copied"] == 1
    assert meta["bytes_moved"] == new_file.file_size_in_bytes
    replica.refresh()
    assert replica.scan().to_arrow().num_rows == 8


def test_a_partly_copied_replica_resumes_without_copying_verified_files_again(
    settings: Settings, instance: dg.DagsterInstance, home: Path
) -> None:
    for name, day in (("a.jsonl", 20), ("b.jsonl", 21)):
        write_records(home / "landing" / name, [good_record(i, day=day) for i in range(4)])
    for batch_id in register(settings, instance):
        ingest(batch_id, instance)
    embeddings, _ = tables(settings)
    files = replication.live_files(embeddings)
    # A crashed earlier run left one verified copy and one torn (half-written) copy, and no commit.
    good_rel, torn_rel = sorted(files)
    replica_root = Path(settings.replica_uri) / "nextesy" / "embeddings"
    for rel in files:
        (replica_root / rel).parent.mkdir(parents=True, exist_ok=True)
    (replica_root / good_rel).write_bytes(Path(files[good_rel].file_path).read_bytes())
    (replica_root / torn_rel).write_bytes(Path(files[torn_rel].file_path).read_bytes()[:100])

    meta = metadata(replicate(instance), "gcs_replica")
    assert (meta["files_copied"], meta["files_reused"]) == (1, 1)
    assert meta["bytes_moved"] == files[torn_rel].file_size_in_bytes
    assert (replica_root / torn_rel).read_bytes() == Path(files[torn_rel].file_path).read_bytes()


def test_rows_accounted_check_fails_when_the_manifest_disagrees_with_the_table(
    settings: Settings, instance: dg.DagsterInstance, home: Path
) -> None:
    write_records(home / "landing" / "one.jsonl", [good_record(i) for i in range(5)])
    [batch_id] = register(settings, instance)
    ingest(batch_id, instance)
    manifest_path = Path(settings.batches_uri) / batch_id / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["rows_in"] += 1  # a row that is neither committed nor quarantined
    manifest_path.write_text(json.dumps(manifest))
    result = dg.materialize(
        [iceberg_table], partition_key=batch_id, instance=instance, resources=RESOURCES, raise_on_error=False
    )
    accounted = check(result, "iceberg_table", "rows_accounted")
    assert not accounted.passed
    assert "rows in 6 != committed 5 + quarantined 0" in (accounted.description or "")
