"""The source table in an AWS Glue catalog (moto's Glue), configured through pyiceberg's own variables."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from click.testing import CliRunner

from nextesy_assets.cli import main
from nextesy_assets.lib import iceberg, replication, storage
from nextesy_assets.lib import properties as props
from nextesy_assets.lib.settings import Settings

from .conftest import BAD_LINES, good_record


@pytest.fixture
def glue_source(cloud: dict[str, str], s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Catalog `source` on Glue, with its own FileIO properties, as an operator would write them."""
    for key, value in {
        "TYPE": "glue",
        "GLUE__ENDPOINT": s3_endpoint,
        "GLUE__REGION": "us-east-1",
        "S3__ENDPOINT": s3_endpoint,
        "S3__REGION": "us-east-1",
        "S3__ACCESS_KEY_ID": "testing",
        "S3__SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(f"PYICEBERG_CATALOG__SOURCE__{key}", value)
    yield
    # moto's Glue lives as long as the session's server: leave no database for the next test.
    glue = boto3.client("glue", endpoint_url=s3_endpoint)
    if any(d["Name"] == props.NAMESPACE for d in glue.get_databases()["DatabaseList"]):
        for table in glue.get_tables(DatabaseName=props.NAMESPACE)["TableList"]:
            glue.delete_table(DatabaseName=props.NAMESPACE, Name=table["Name"])
        glue.delete_database(Name=props.NAMESPACE)


@pytest.mark.timeout(120)
def test_sync_with_the_source_catalog_on_glue(
    glue_source: None, cloud: dict[str, str], settings: Settings, s3_endpoint: str
) -> None:
    good = [json.dumps(good_record(i, day=20 + i % 2)) for i in range(10)]
    for n, lines in enumerate(([*good[:5], BAD_LINES[0][0]], good[5:])):
        storage.write_bytes(f"{cloud['landing']}/f{n}.jsonl", "".join(f"{x}\n" for x in lines).encode())
    result = CliRunner().invoke(main, ["sync"])
    assert result.exit_code == 0, result.output
    assert "2 new (0 failed)" in result.output

    catalog = iceberg.source_catalog(settings)
    assert type(catalog).__name__ == "GlueCatalog"
    assert not (settings.catalog_dir / "source.db").exists()  # nothing went to the embedded catalog
    glue = boto3.client("glue", endpoint_url=s3_endpoint)
    entry = glue.get_table(DatabaseName=props.NAMESPACE, Name=props.EMBEDDINGS_TABLE)["Table"]
    source = iceberg.embeddings_table(settings)
    assert entry["Parameters"]["metadata_location"] == source.metadata_location
    assert source.metadata_location.startswith(cloud["warehouse"])
    assert source.scan().to_arrow().num_rows == 10
    assert iceberg.committed_batches(source) and len(iceberg.committed_batches(source)) == 2
    quarantined = iceberg.ensure_quarantine_table(catalog, settings.warehouse_uri)
    assert quarantined.scan().to_arrow().num_rows == 1 and iceberg.reconcile(source, quarantined).ok
    parity = replication.parity(settings, checksum_sample=None)
    assert parity.ok, parity.describe()

    # A second sync finds nothing new and commits nothing to Glue.
    version = glue.get_table(DatabaseName=props.NAMESPACE, Name=props.EMBEDDINGS_TABLE)["Table"]["VersionId"]
    assert "0 new" in CliRunner().invoke(main, ["sync"]).output
    assert glue.get_table(DatabaseName=props.NAMESPACE, Name=props.EMBEDDINGS_TABLE)["Table"]["VersionId"] == version
