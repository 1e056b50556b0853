"""Declarative specs: each test type fails on data crafted to break it, passes on clean data; bad specs fail loudly."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from dbt_like_checks import SpecError, load_spec, load_specs
from dbt_like_checks.asset_checks import SPEC_DIR, build_asset_checks
from dbt_like_checks.evaluate import evaluate

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def embeddings(**overrides: list[object]) -> pa.Table:
    rows = 4
    data: dict[str, list[object]] = {
        "id": ["a", "b", "c", "d"],
        "model": ["m1", "m1", "m2", "m2"],
        "vector": [[0.1, 0.2], [0.3, 0.4], [0.1, 0.2, 0.3], [0.5, 0.6, 0.7]],
        "ts": [NOW - timedelta(hours=i) for i in range(rows)],
        "batch_id": ["b1", "b1", "b2", "b2"],
        "ingested_at": [NOW - timedelta(hours=1)] * rows,
    }
    data.update(overrides)
    return pa.table(data)


def quarantine() -> pa.Table:
    return pa.table({"batch_id": ["b1", "b9"], "record_index": [3, 0], "reason": ["bad_type", "non_finite"]})


def run(tmp_path: Path, test_yaml: str, table: pa.Table | None = None, sql: str | None = None):  # type: ignore[no-untyped-def]
    spec_file = tmp_path / "spec.yml"
    spec_file.write_text("table: embeddings\nasset: iceberg_table\ntests:\n" + textwrap.indent(test_yaml, "  "))
    if sql is not None:
        (tmp_path / "sql").mkdir(exist_ok=True)
        (tmp_path / "sql" / "t.sql").write_text(sql)
    [test] = load_spec(spec_file).tests
    con = duckdb.connect()
    con.register("embeddings", table if table is not None else embeddings())
    con.register("quarantine", quarantine())
    return evaluate(con, "embeddings", test, {"nextesy.vector-dims": "2"}, now=NOW)


CASES = {
    "not_null": ("- name: t\n  not_null: {columns: [id, model]}", {"id": ["a", None, "c", "d"]}),
    "unique": ("- name: t\n  unique: {columns: [model, batch_id]}", {"batch_id": ["b1", "b1", "b1", "b2"]}),
    "accepted_values": (
        "- name: t\n  accepted_values: {column: model, values: [m1, m2]}",
        {"model": ["m1", "m1", "m2", "m9"]},
    ),
    "accepted_range": (
        "- name: t\n  accepted_range: {column: ts, min: '2026-11-01T00:00:00Z', max: '2026-12-01T00:00:00Z'}",
        {"ts": [NOW, NOW, NOW, datetime(2027, 1, 1, tzinfo=UTC)]},
    ),
    "relationships": (
        "- name: t\n  relationships: {column: batch_id, to: quarantine, field: batch_id}",
        {"batch_id": ["b1", "b7", "b9", "b9"]},
    ),
    "row_count": ("- name: t\n  row_count: {min: 4, max: 4}", None),
    "vector_dims": ("- name: t\n  vector_dims: {column: vector, per: model}", {"vector": [[0.1, 0.2]] * 3 + [[1.0]]}),
    "sql": ("- name: t\n  sql: {file: t.sql}", {"id": ["a", "b", "c", "zzz"]}),
}
# What the clean fixture breaks first for each case: the clean table must pass, the crafted one fail.
CLEAN = {
    "unique": {"model": ["m1", "m1", "m2", "m2"], "batch_id": ["b1", "b2", "b1", "b2"]},
    "relationships": {"batch_id": ["b1", "b1", "b9", "b9"]},
    "vector_dims": {"vector": [[0.1, 0.2]] * 4},
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_test_type_passes_clean_data_and_fails_crafted_data(tmp_path: Path, kind: str) -> None:
    spec, broken = CASES[kind]
    sql = "SELECT * FROM embeddings WHERE length(id) > 1" if kind == "sql" else None
    clean = run(tmp_path, spec, embeddings(**CLEAN.get(kind, {})), sql=sql)
    assert clean.passed, clean.description
    if kind == "row_count":
        failed = run(tmp_path, spec, embeddings().slice(0, 3))
    else:
        failed = run(tmp_path, spec, embeddings(**{**CLEAN.get(kind, {}), **(broken or {})}), sql=sql)
    assert not failed.passed
    if "failing_rows" in failed.metadata:
        assert failed.metadata["failing_rows"] in (1, 2)


def test_vector_dims_against_the_table_property(tmp_path: Path) -> None:
    spec = "- name: t\n  vector_dims: {column: vector, per: model, expected: table}"
    assert run(tmp_path, spec, embeddings(vector=[[0.1, 0.2]] * 4)).passed
    result = run(tmp_path, spec, embeddings(vector=[[0.1, 0.2, 0.3]] * 4))
    assert not result.passed and result.metadata["failing_groups"] == 2


def test_freshness_warns_then_errors(tmp_path: Path) -> None:
    spec = "- name: t\n  freshness: {column: ingested_at, warn_after: {hours: 2}, error_after: {days: 1}}"
    assert run(tmp_path, spec).passed
    warn = run(tmp_path, spec, embeddings(ingested_at=[NOW - timedelta(hours=5)] * 4))
    assert (warn.passed, warn.severity) == (False, "warn")
    error = run(tmp_path, spec, embeddings(ingested_at=[NOW - timedelta(days=3)] * 4))
    assert (error.passed, error.severity) == (False, "error")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "table: embeddings\nasset: iceberg_table\ntests:\n  - name: x\n    not_nul: {columns: [id]}\n",
            "tests[0].not_nul: unknown key",
        ),
        ("table: embeddings\nasset: iceberg_table\ntests:\n  - not_null: {columns: [id]}\n", "tests[0].name: missing"),
        (
            "table: embeddings\nasset: iceberg_table\ntests:\n  - name: x\n    not_null: {column: id}\n",
            "tests[0].not_null.columns",
        ),
        (
            "table: embeddings\nasset: iceberg_table\ntests:\n  - name: x\n    row_count: {min: many}\n",
            "tests[0].row_count.min",
        ),
        (
            "table: embeddings\nasset: iceberg_table\ntests:\n  - name: x\n    sql: {file: nope.sql}\n",
            "tests[0].sql.file: no such file",
        ),
        ("table: vectors\nasset: iceberg_table\ntests: []\n", "table: 'vectors' is not one of"),
        ("table: embeddings\ntests: []\n", "asset: missing"),
        (
            "table: embeddings\nasset: iceberg_table\ntests:\n"
            "  - name: x\n    row_count: {}\n  - name: x\n    row_count: {}\n",
            "tests[1].name: 'x' is used twice",
        ),
        (
            "table: embeddings\nasset: iceberg_table\ntests:\n  - name: x\n    severity: fatal\n    row_count: {}\n",
            "tests[0].severity",
        ),
        ("table: [unclosed\n", "not valid YAML"),
    ],
    ids=[
        "unknown-type",
        "no-name",
        "bad-arg",
        "bad-value",
        "missing-sql",
        "bad-table",
        "no-asset",
        "duplicate",
        "bad-severity",
        "yaml",
    ],
)
def test_an_invalid_spec_fails_loudly_naming_file_and_key(tmp_path: Path, content: str, message: str) -> None:
    spec_file = tmp_path / "broken.yml"
    spec_file.write_text(content)
    with pytest.raises(SpecError) as error:
        build_asset_checks(tmp_path)
    assert str(spec_file) in str(error.value) and message in str(error.value)


def test_shipped_specs_load_and_become_checks_with_their_blocking_flags() -> None:
    specs = load_specs(SPEC_DIR)
    assert {s.table for s in specs} == {"embeddings", "quarantine"}
    checks = build_asset_checks()
    names = {key.name for check in checks for key in check.check_keys}
    assert {"unique_key", "one_dimension_per_model", "known_reasons", "no_events_from_the_future"} <= names
