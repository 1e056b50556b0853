"""An independent engine reads both tables: DuckDB's Iceberg extension, loaded from the PyPI packages."""

from __future__ import annotations

from pathlib import Path

import duckdb
import duckdb_extension_avro
import duckdb_extension_iceberg
import numpy as np
import pytest
from click.testing import CliRunner

from nextesy_assets.cli import main
from nextesy_assets.lib import iceberg, replication
from nextesy_assets.lib.settings import Settings


def extension_file(package: object) -> str:
    [path] = Path(package.__file__).parent.glob(f"extensions/v{duckdb.__version__}/*.duckdb_extension")  # type: ignore[attr-defined]
    return str(path)


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(config={"allow_unsigned_extensions": "true", "autoinstall_known_extensions": "false"})
    for package in (duckdb_extension_avro, duckdb_extension_iceberg):
        connection.execute(f"LOAD '{extension_file(package)}'")
    return connection


def test_duckdb_reads_source_replica_and_quarantine(
    home: Path, settings: Settings, con: duckdb.DuckDBPyConnection
) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["demo", "--files", "2", "--rows", "25"]).exit_code == 0
    assert runner.invoke(main, ["sync"]).exit_code == 0
    catalog = iceberg.source_catalog(settings)
    source = iceberg.embeddings_table(settings)
    quarantine = iceberg.ensure_quarantine_table(catalog, settings.warehouse_uri)
    replica = replication.ensure_replica_table(settings, source)

    def scan(table) -> list[tuple]:  # type: ignore[no-untyped-def]
        return con.execute(
            f"SELECT id, model, ts, vector, batch_id FROM iceberg_scan('{table.metadata_location}') ORDER BY id, model"
        ).fetchall()

    from_source, from_replica = scan(source), scan(replica)
    assert len(from_source) == 50 and from_source == from_replica
    expected = source.scan().to_arrow().sort_by([("id", "ascending"), ("model", "ascending")])
    assert [r[0] for r in from_source] == expected["id"].to_pylist()
    duck_vectors = np.array([r[3] for r in from_source], dtype=np.float32)
    assert np.array_equal(duck_vectors, np.array(expected["vector"].to_pylist(), dtype=np.float32))
    assert {len(r[3]) for r in from_source} == {settings.dims}

    reasons = con.execute(
        f"SELECT reason, count(*) FROM iceberg_scan('{quarantine.metadata_location}') GROUP BY reason"
    ).fetchall()
    assert sum(n for _, n in reasons) == 7 and len(reasons) == 7
