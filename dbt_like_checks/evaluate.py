"""Evaluate one declarative test on DuckDB views of the tables' current snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb

from .spec import (
    AcceptedRange,
    AcceptedValues,
    Freshness,
    NotNull,
    Relationships,
    RowCount,
    SqlTest,
    TestSpec,
    Unique,
    VectorDims,
)


@dataclass
class TestResult:
    passed: bool
    severity: str  # "error" or "warn": how a failure counts
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> int:
    row = con.execute(sql, params or []).fetchone()
    return int(row[0] or 0) if row else 0


def evaluate(
    con: duckdb.DuckDBPyConnection,
    table: str,
    test: TestSpec,
    properties: dict[str, str],
    now: datetime | None = None,
) -> TestResult:
    """Run `test` against view `table`; failing rows are counted, never loaded into Python."""
    now = now or datetime.now(UTC)
    args = test.args
    t = _q(table)
    rows = _count(con, f"SELECT count(*) FROM {t}")

    def by_count(failing: int, what: str, **extra: Any) -> TestResult:
        text = f"{failing} of {rows} rows {what}" if failing else f"no rows {what}"
        return TestResult(failing == 0, test.severity, text, {"failing_rows": failing, "rows": rows, **extra})

    if isinstance(args, NotNull):
        condition = " OR ".join(f"{_q(c)} IS NULL" for c in args.columns)
        return by_count(_count(con, f"SELECT count(*) FROM {t} WHERE {condition}"), f"with a null in {args.columns}")
    if isinstance(args, Unique):
        cols = ", ".join(_q(c) for c in args.columns)
        groups = f"SELECT {cols}, count(*) AS n FROM {t} GROUP BY ALL HAVING n > 1"
        row = con.execute(f"SELECT count(*), coalesce(sum(n), 0) FROM ({groups})").fetchone()
        keys, dup_rows = (int(row[0]), int(row[1])) if row else (0, 0)
        result = by_count(dup_rows, f"share a key of {args.columns} with another row", duplicated_keys=keys)
        return result
    if isinstance(args, AcceptedValues):
        failing = _count(
            con,
            f"SELECT count(*) FROM {t} WHERE {_q(args.column)} IS NOT NULL "
            f"AND CAST({_q(args.column)} AS VARCHAR) NOT IN (SELECT CAST(unnest(?) AS VARCHAR))",
            [[str(v) for v in args.values]],
        )
        return by_count(failing, f"with {args.column} outside {args.values}")
    if isinstance(args, AcceptedRange):
        conditions, params = [], []
        if args.min is not None:
            conditions.append(f"{_q(args.column)} < ?")
            params.append(args.min)
        if args.max is not None:
            conditions.append(f"{_q(args.column)} > ?")
            params.append(args.max)
        failing = _count(con, f"SELECT count(*) FROM {t} WHERE {' OR '.join(conditions)}", params)
        return by_count(failing, f"with {args.column} outside [{args.min}, {args.max}]")
    if isinstance(args, Relationships):
        failing = _count(
            con,
            f"SELECT count(*) FROM {t} WHERE {_q(args.column)} IS NOT NULL AND {_q(args.column)} NOT IN "
            f"(SELECT {_q(args.field)} FROM {_q(args.to)} WHERE {_q(args.field)} IS NOT NULL)",
        )
        return by_count(failing, f"whose {args.column} has no match in {args.to}.{args.field}")
    if isinstance(args, Freshness):
        row = con.execute(f"SELECT max({_q(args.column)}) FROM {t}").fetchone()
        latest = row[0] if row else None
        if latest is None:
            return TestResult(False, "error", f"no rows: {args.column} has no latest value", {"rows": rows})
        age = now - latest
        meta = {"latest": latest.isoformat(), "age_seconds": round(age.total_seconds(), 1)}
        if args.error_after is not None and age > args.error_after.delta():
            return TestResult(
                False, "error", f"latest {args.column} is {age} old (error after {args.error_after.delta()})", meta
            )
        if args.warn_after is not None and age > args.warn_after.delta():
            return TestResult(
                False, "warn", f"latest {args.column} is {age} old (warn after {args.warn_after.delta()})", meta
            )
        return TestResult(True, test.severity, f"latest {args.column} is {age} old", meta)
    if isinstance(args, RowCount):
        ok = (args.min is None or rows >= args.min) and (args.max is None or rows <= args.max)
        return TestResult(ok, test.severity, f"{rows} rows (allowed [{args.min}, {args.max}])", {"rows": rows})
    if isinstance(args, VectorDims):
        expected = int(properties["nextesy.vector-dims"]) if args.expected == "table" else args.expected
        groups = con.execute(
            f"SELECT {_q(args.per)}, list(DISTINCT len({_q(args.column)}) ORDER BY len({_q(args.column)})) "
            f"FROM {t} GROUP BY ALL ORDER BY 1"
        ).fetchall()
        bad = {
            str(group): dims for group, dims in groups if len(dims) > 1 or (expected is not None and dims != [expected])
        }
        text = (
            f"{len(bad)} of {len(groups)} {args.per} values have other or several dimensions: {bad}"
            if bad
            else f"one dimension per {args.per} across {len(groups)} values"
        )
        return TestResult(
            not bad, test.severity, text, {"groups": len(groups), "failing_groups": len(bad), "expected": expected or 0}
        )
    if isinstance(args, SqlTest):
        sql = (test.sql_text or "").strip().rstrip(";")
        failing = _count(con, f"SELECT count(*) FROM ({sql})")
        return TestResult(
            failing == 0,
            test.severity,
            f"{failing} rows returned by {args.file}" if failing else f"{args.file} returned no rows",
            {"failing_rows": failing},
        )
    raise TypeError(f"unhandled test type {test.kind!r}")
