"""Promoted input fields evolve the table schema (and the replica follows); the rest stays in payload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from nextesy_assets.cli import main
from nextesy_assets.lib import iceberg, replication
from nextesy_assets.lib.duckdb_iceberg import connect
from nextesy_assets.lib.errors import ConfigurationError, SchemaConflictError
from nextesy_assets.lib.settings import Settings, parse_extra_columns

from .conftest import good_record, write_records


def sync(code: int = 0) -> str:
    result = CliRunner().invoke(main, ["sync"])
    assert result.exit_code == code, result.output
    return result.output


def test_listed_fields_become_columns_in_source_and_replica(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_records(home / "landing" / "before.jsonl", [good_record(i, lang="en", score=3) for i in range(3)])
    sync()
    monkeypatch.setenv("NEXTESY_EXTRA_COLUMNS", "lang:string, score:long")
    write_records(
        home / "landing" / "after.jsonl", [good_record(i, day=21, lang="de", score=7, note="x") for i in range(4)]
    )
    sync()

    settings = Settings.load()
    source = iceberg.embeddings_table(settings)
    replica = replication.ensure_replica_table(settings, source)
    for table in (source, replica):
        assert [f.name for f in table.schema().fields][-2:] == ["lang", "score"]
        assert not table.schema().find_field("lang").required
    assert replica.schema() == source.schema()

    rows = source.scan().to_arrow().sort_by("batch_id").to_pylist()
    after = [r for r in rows if r["lang"] is not None]
    before = [r for r in rows if r["lang"] is None]
    assert len(after) == 4 and {(r["lang"], r["score"]) for r in after} == {("de", 7)}
    assert {json.loads(r["payload"]) == {"note": "x"} for r in after} == {True}  # unlisted stay in payload
    assert len(before) == 3 and {json.loads(r["payload"])["lang"] for r in before} == {"en"}  # older files: null
    assert replica.scan().to_arrow().sort_by("id").equals(source.scan().to_arrow().sort_by("id"))

    # An independent reader sees the new columns too.
    con = connect()
    langs = con.execute(
        f"SELECT lang, count(*) FROM iceberg_scan('{replica.metadata_location}') GROUP BY lang ORDER BY lang"
    ).fetchall()
    assert langs == [("de", 4), (None, 3)]


def test_a_promoted_field_of_the_wrong_type_is_a_bad_type_reject(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXTESY_EXTRA_COLUMNS", "score:long")
    write_records(home / "landing" / "a.jsonl", [good_record(1, score=3), good_record(2, score="high")])
    sync()
    settings = Settings.load()
    quarantined = iceberg.ensure_quarantine_table(iceberg.source_catalog(settings), settings.warehouse_uri)
    [reject] = quarantined.scan().to_arrow().to_pylist()
    assert reject["reason"] == "bad_type" and "score must be a 64-bit integer" in reject["detail"]


def test_a_column_type_change_is_refused(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXTESY_EXTRA_COLUMNS", "score:long")
    write_records(home / "landing" / "a.jsonl", [good_record(1, score=3)])
    sync()
    monkeypatch.setenv("NEXTESY_EXTRA_COLUMNS", "score:string")
    with pytest.raises(SchemaConflictError, match="declares score:string but table"):
        iceberg.embeddings_table(Settings.load())


@pytest.mark.parametrize(
    ("value", "message"),
    [("Lang:string", "not a lower-case identifier"), ("id:string", "already a column"), ("x:decimal", "not one of")],
)
def test_extra_column_settings_are_validated(value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_extra_columns(value)
    assert parse_extra_columns(" a , b:double ") == (("a", "string"), ("b", "double"))
