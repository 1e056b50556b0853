"""Each batch rule fails on data crafted to break exactly it, passes on clean data, and blocking ones hold the batch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from nextesy_assets.cli import main
from nextesy_assets.defs.assets import iceberg_table, parquet_batches, quarantine, raw_embeddings
from nextesy_assets.defs.resources import NextesyResource
from nextesy_assets.lib import iceberg, quality, rules
from nextesy_assets.lib.expectations import validate_batch
from nextesy_assets.lib.ingest import BatchManifest, DataFileInfo, write_parquet
from nextesy_assets.lib.schema import EMBEDDINGS_ARROW, VECTOR_TYPE
from nextesy_assets.lib.settings import Settings
from nextesy_assets.lib.thresholds import Thresholds

from .conftest import DIMS, good_record, write_lines, write_records

NOW = datetime(2026, 11, 24, tzinfo=UTC)
T = Thresholds()


def unit_rows(n: int, seed: int = 0, dims: int = DIMS) -> np.ndarray:
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((n, dims)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def batch_file(tmp_path: Path, vectors: list[list[float]], ids: list[str] | None = None, **columns: object) -> str:
    n = len(vectors)
    table = pa.table(
        {
            "id": ids or [f"r{i}" for i in range(n)],
            "model": ["m"] * n,
            "vector": pa.array(vectors, VECTOR_TYPE),
            "ts": pa.array([NOW] * n, pa.timestamp("us", tz="UTC")),
            "source": [None] * n,
            "payload": [None] * n,
            "batch_id": ["b"] * n,
            "ingested_at": pa.array([NOW] * n, pa.timestamp("us", tz="UTC")),
        },
        schema=EMBEDDINGS_ARROW,
    )
    for name, value in columns.items():
        table = table.append_column(name, pa.array([value] * n))
    uri = str(tmp_path / f"{len(list(tmp_path.glob('*.parquet')))}.parquet")
    if columns:
        pq.write_table(table, uri)
    else:
        write_parquet(table, uri, 1000)
    return uri


def judge(files: list[str], rows_in: int | None = None, rejected: int = 0) -> dict[str, rules.Outcome]:
    profile = quality.profile_batch(files, DIMS, T)
    manifest = BatchManifest(
        batch_id="b",
        source_uri="landing/b.jsonl",
        format="jsonl",
        input_bytes=0,
        rows_in=(rows_in if rows_in is not None else profile.rows),
        rows_good=profile.rows,
        rows_rejected=rejected,
        reasons={},
        data_files=[DataFileInfo(uri=f, day="2026-11-24", rows=0, bytes=0) for f in files],
    )
    report = validate_batch(profile.scalars, T, now=NOW) if profile.scalars is not None else None
    return {o.rule: o for o in rules.judge_batch(manifest, profile, DIMS, T, [], report)}


def failing(outcomes: dict[str, rules.Outcome]) -> set[str]:
    return {name for name, o in outcomes.items() if not o.passed}


def test_clean_batch_passes_every_rule(tmp_path: Path) -> None:
    outcomes = judge([batch_file(tmp_path, unit_rows(50).tolist())])
    assert failing(outcomes) == set()
    assert {r.name for r in rules.BATCH_RULES} == set(outcomes)


CRAFTED = {
    "vector_dims": lambda v: [*v[:-1], v[-1][:3]],
    "finite_values": lambda v: [*v[:-1], [float("nan")] * DIMS],
    "no_zero_vectors": lambda v: [*v[:-1], [0.0] * DIMS],
    "norm_band": lambda v: [*v[:-1], [x * 5 for x in v[-1]]],
    "duplicate_vectors": lambda v: [*v[:-2], v[0], [x + 1e-4 for x in v[1]]],
}


@pytest.mark.parametrize("rule", sorted(CRAFTED))
def test_each_rule_fails_on_data_breaking_exactly_it(tmp_path: Path, rule: str) -> None:
    vectors = CRAFTED[rule](unit_rows(50).tolist())
    outcomes = judge([batch_file(tmp_path, vectors)])
    # A bad norm or a NaN also fails the suite's norm expectation, which watches the same column.
    assert failing(outcomes) - {"expectations"} == {rule}
    outcome = outcomes[rule]
    if not outcome.warn_only:
        assert "1 of 50 rows" in outcome.description and "held" in outcome.description
        assert outcome.metadata["failing_rows"] == 1


def test_duplicates_count_exact_and_near_separately(tmp_path: Path) -> None:
    vectors = unit_rows(50).tolist()
    vectors[10] = vectors[0]  # exact
    vectors[11] = [x + 1e-4 for x in vectors[1]]  # near
    outcome = judge([batch_file(tmp_path, vectors)])["duplicate_vectors"]
    assert (outcome.metadata["exact_duplicates"], outcome.metadata["near_duplicates"]) == (1, 2)


def test_schema_rule_fails_on_an_extra_column(tmp_path: Path) -> None:
    outcomes = judge([batch_file(tmp_path, unit_rows(5).tolist(), extra_column="x")])
    assert failing(outcomes) == {"schema"}


def test_reject_ratio_rule(tmp_path: Path) -> None:
    files = [batch_file(tmp_path, unit_rows(10).tolist())]
    assert judge(files, rows_in=20, rejected=10)["reject_ratio"].passed  # 50 % is the limit
    outcome = judge(files, rows_in=30, rejected=20)["reject_ratio"]
    assert not outcome.passed and outcome.metadata["ratio"] == pytest.approx(2 / 3, abs=1e-6)


def test_expectations_report_unexpected_counts(tmp_path: Path) -> None:
    ids = [f"r{i}" for i in range(19)] + ["r0"]
    outcome = judge([batch_file(tmp_path, unit_rows(20).tolist(), ids=ids)])["expectations"]
    assert not outcome.passed and outcome.warn_only
    assert outcome.metadata["column_values_to_be_unique[id].unexpected_count"] == 2
    assert outcome.metadata["column_values_to_be_unique[id].unexpected_percent"] == 10.0


def anisotropic(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Embedding-like: a strong common direction plus noise; `shift` rotates the common direction."""
    rng = np.random.default_rng(seed)
    common = np.zeros(DIMS)
    common[0], common[1] = np.cos(shift), np.sin(shift)
    matrix = common * 3 + rng.standard_normal((n, DIMS))
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


def model_stats(tmp_path: Path, vectors: np.ndarray) -> dict[str, quality.ModelStats]:
    return quality.profile_batch([batch_file(tmp_path, vectors.tolist())], DIMS, T).models


def test_drift_fires_on_a_shifted_distribution_and_not_on_a_fresh_sample(tmp_path: Path) -> None:
    reference = [model_stats(tmp_path, anisotropic(400, seed)) for seed in range(3)]
    [same] = quality.drift(model_stats(tmp_path, anisotropic(400, 99)), reference)
    [moved] = quality.drift(model_stats(tmp_path, anisotropic(400, 98, shift=1.0)), reference)
    assert same.centroid_shift < T.max_centroid_shift < moved.centroid_shift
    assert same.reference_rows == 1200


def test_norm_psi_fires_when_norms_move_inside_the_band(tmp_path: Path) -> None:
    base = anisotropic(400, 1)
    reference = [model_stats(tmp_path, base * 1.0)]
    [same] = quality.drift(model_stats(tmp_path, anisotropic(400, 2)), reference)
    [scaled] = quality.drift(model_stats(tmp_path, anisotropic(400, 3) * 1.6), reference)
    assert same.norm_psi < T.max_norm_psi < scaled.norm_psi


# ---- through Dagster: a failing blocking rule keeps the batch out of the table --------------------------


@pytest.fixture
def instance(home: Path) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        yield instance


def test_a_blocking_rule_holds_the_batch_and_accounts_for_its_rows(
    home: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    records = [good_record(i) for i in range(10)]
    records[3]["vector"] = [0.0] * DIMS  # a valid record for the parser, a zero vector for the rules
    write_records(home / "landing" / "zero.jsonl", records)
    scan_result = CliRunner().invoke(main, ["sync"])
    assert scan_result.exit_code == 1
    assert "parquet_batches:no_zero_vectors" in scan_result.output
    assert "1 of 10 rows" in scan_result.output and "held" in scan_result.output

    table = iceberg.ensure_embeddings_table(iceberg.source_catalog(settings), settings.warehouse_uri, DIMS)
    assert table.current_snapshot() is None  # nothing reached the table


def test_blocking_check_result_names_rule_rows_and_place(
    home: Path, settings: Settings, instance: dg.DagsterInstance
) -> None:
    records = [good_record(i) for i in range(10)]
    records[5]["vector"] = [v * 9 for v in records[5]["vector"]]
    write_records(home / "landing" / "big-norm.jsonl", records)
    from nextesy_assets.lib import landing

    [registration] = landing.scan(settings).new
    instance.add_dynamic_partitions("batches", [registration.batch_id])
    result = dg.materialize(
        [raw_embeddings, parquet_batches, iceberg_table, quarantine],
        partition_key=registration.batch_id,
        instance=instance,
        resources={"nextesy": NextesyResource()},
        raise_on_error=False,
    )
    [norm] = [e for e in result.get_asset_check_evaluations() if e.check_name == "norm_band"]
    assert not norm.passed and norm.severity == dg.AssetCheckSeverity.ERROR
    assert "1 of 10 rows" in (norm.description or "") and registration.batch_id in (norm.description or "")
    assert norm.metadata["failing_rows"].value == 1
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "iceberg_table" not in materialized and "quarantine" not in materialized


def test_raw_embeddings_within_limits_blocks_an_oversized_file(
    home: Path, settings: Settings, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEXTESY_MAX_RECORDS", "3")
    write_lines(home / "landing" / "many.jsonl", [json.dumps(good_record(i)) for i in range(5)])
    out = CliRunner().invoke(main, ["sync"])
    assert out.exit_code == 1 and "raw_embeddings:within_limits" in out.output and "5 records (limit 3)" in out.output


def test_reconciliation_finds_a_batch_whose_rows_do_not_add_up(home: Path, settings: Settings, tmp_path: Path) -> None:
    catalog = iceberg.source_catalog(settings)
    embeddings = iceberg.ensure_embeddings_table(catalog, settings.warehouse_uri, DIMS)
    quarantined = iceberg.ensure_quarantine_table(catalog, settings.warehouse_uri)
    good = batch_file(tmp_path, unit_rows(5).tolist())
    iceberg.commit_data_files(embeddings, "balanced", [good], rows=5, rows_in=5)
    assert iceberg.reconcile(embeddings, quarantined).ok
    other = batch_file(tmp_path, unit_rows(3).tolist())
    iceberg.commit_data_files(embeddings, "lossy", [other], rows=3, rows_in=4)  # one row vanished
    result = iceberg.reconcile(embeddings, quarantined)
    assert not result.ok and result.unbalanced == {"lossy": (4, 3, 0)}
    assert (result.rows_in, result.rows_committed, result.table_rows) == (9, 8, 8)


def test_every_error_check_passes_on_a_clean_sync(home: Path, settings: Settings) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["demo", "--files", "2", "--rows", "30"]).exit_code == 0
    assert runner.invoke(main, ["sync"]).exit_code == 0
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        evaluations = [
            event.asset_check_evaluation
            for run in instance.get_runs()
            for event in instance.all_logs(run.run_id)
            if event.dagster_event and event.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
    failed = {(e.asset_key.to_user_string(), e.check_name) for e in evaluations if e and not e.passed}
    assert len(evaluations) > 40
    assert failed == set(), failed
