"""The pipeline over the real S3 and GCS wire protocols (moto and fake-gcs-server on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner

from nextesy_assets.cli import main
from nextesy_assets.lib import iceberg, landing, replication, storage
from nextesy_assets.lib.settings import Settings

from .conftest import BAD_LINES, good_record


def put_jsonl(uri: str, lines: list[str]) -> None:
    storage.write_bytes(uri, "".join(line + "\n" for line in lines).encode())


def sync(code: int = 0) -> str:
    result = CliRunner().invoke(main, ["sync"])
    assert result.exit_code == code, result.output
    return result.output


def test_sensor_listing_over_s3_pages_with_etags(cloud: dict[str, str], settings: Settings) -> None:
    for name in ("a.jsonl", "b.jsonl", "c/d.jsonl.gz", "notes.txt"):
        storage.write_bytes(f"{cloud['landing']}/{name}", b"{}\n")
    pages = list(storage.list_objects(cloud["landing"], page_size=2))
    assert [len(p) for p in pages] == [2, 2]  # no directory marker objects: object stores have no folders
    keys = [o.key for page in pages for o in page]
    assert keys == ["a.jsonl", "b.jsonl", "c/d.jsonl.gz", "notes.txt"]
    bucket = cloud["landing"].split("/")[2]
    etag = boto3.client("s3").head_object(Bucket=bucket, Key="landing/a.jsonl")["ETag"].strip('"')
    assert pages[0][0].etag == etag == storage.stat(f"{cloud['landing']}/a.jsonl").etag
    assert [o.key for p in storage.list_objects(cloud["landing"], start_after="b.jsonl") for o in p] == [
        "c/d.jsonl.gz",
        "notes.txt",
    ]
    scan = landing.scan(settings, page_size=2, max_pages=1)
    assert [r.key for r in scan.new] == ["a.jsonl", "b.jsonl"] and not scan.complete


def test_sync_on_s3_and_gcs_gives_exact_results_and_a_verified_replica(
    cloud: dict[str, str], settings: Settings
) -> None:
    good = [json.dumps(good_record(i, day=20 + i % 2)) for i in range(12)]
    put_jsonl(f"{cloud['landing']}/2026/11/20/one.jsonl", good[:6] + [line for line, _ in BAD_LINES[:4]])
    put_jsonl(f"{cloud['landing']}/2026/11/21/two.jsonl", good[6:])
    out = sync()
    assert "2 new (0 failed)" in out

    source = iceberg.embeddings_table(settings)
    assert source.location().startswith(cloud["warehouse"])
    assert source.scan().to_arrow().num_rows == 12
    quarantined = iceberg.ensure_quarantine_table(iceberg.source_catalog(settings), settings.warehouse_uri)
    assert quarantined.scan().to_arrow().num_rows == 4

    replica = replication.ensure_replica_table(settings, source)
    assert replica.location().startswith(cloud["replica"])
    assert replication.watermark(replica) == source.current_snapshot().snapshot_id
    assert replica.scan().to_arrow().sort_by("id").equals(source.scan().to_arrow().sort_by("id"))
    source_files, replica_files = replication.live_files(source), replication.live_files(replica)
    assert sorted(source_files) == sorted(replica_files)
    for relative, data_file in source_files.items():
        # GCS's own CRC32C of each replica object equals the checksum of the S3 source bytes.
        assert storage.crc32c(replica_files[relative].file_path) == storage.crc32c(data_file.file_path)
        assert storage.read_bytes(replica_files[relative].file_path) == storage.read_bytes(data_file.file_path)

    before = (len(source.metadata.snapshots), len(replica.metadata.snapshots))
    assert "0 new" in sync()
    source.refresh()
    replica.refresh()
    assert (len(source.metadata.snapshots), len(replica.metadata.snapshots)) == before


def test_a_corrupted_replica_object_is_caught_and_copied_again(cloud: dict[str, str], settings: Settings) -> None:
    put_jsonl(f"{cloud['landing']}/one.jsonl", [json.dumps(good_record(i)) for i in range(5)])
    CliRunner().invoke(main, ["demo", "--help"])  # keeps the CLI import warm; no side effect
    from nextesy_assets.lib import batches, ingest

    [registration] = landing.scan(settings).new
    source = iceberg.embeddings_table(settings)
    manifest = ingest.convert_batch(settings, registration, source.location())
    iceberg.commit_data_files(source, registration.batch_id, [f.uri for f in manifest.data_files], 5, 5)
    [data_file] = replication.live_files(source).values()
    replica_uri = data_file.file_path.replace(
        iceberg.table_location(settings.warehouse_uri, "embeddings"),
        iceberg.table_location(settings.replica_uri, "embeddings"),
    )
    # A torn copy left by an earlier crash: present, but its bytes differ.
    storage.write_bytes(replica_uri, storage.read_bytes(data_file.file_path)[:-7] + b"garbage")
    result = replication.replicate(settings)
    assert (result.files_copied, result.files_reused) == (1, 0)
    assert storage.crc32c(replica_uri) == storage.crc32c(data_file.file_path)
    assert batches.lookup(settings, registration.batch_id).key == "one.jsonl"


@pytest.mark.parametrize("name", ["a.jsonl"])
def test_a_landing_file_rewritten_in_place_is_a_new_batch(cloud: dict[str, str], settings: Settings, name: str) -> None:
    uri = f"{cloud['landing']}/{name}"
    put_jsonl(uri, [json.dumps(good_record(1))])
    [first] = landing.scan(settings).new
    put_jsonl(uri, [json.dumps(good_record(2))])
    [second] = landing.scan(settings, known={first.batch_id}).new
    assert first.batch_id != second.batch_id and first.etag != second.etag


def test_no_cloud_variables_leak_into_the_embedded_default(home: Path) -> None:
    settings = Settings.load()
    assert "://" not in settings.warehouse_uri and storage.fileio_properties(settings.warehouse_uri) == {}
