"""Sensors driven with build_sensor_context: run requests, run keys, cursor, unsupported files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from nextesy_assets.definitions import defs
from nextesy_assets.defs import sensors
from nextesy_assets.defs.resources import NextesyResource
from nextesy_assets.lib import batches
from nextesy_assets.lib import properties as props

from .conftest import good_record, write_records


@pytest.fixture
def instance(home: Path) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        yield instance


def tick(instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"nextesy": NextesyResource()})
    result = sensors.landing_sensor(context)
    assert isinstance(result, dg.SensorResult)
    # Apply what the daemon would: the partitions the tick asked for.
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def landing(home: Path, *names: str) -> None:
    for name in names:
        write_records(home / "landing" / name, [good_record(len(name))])


def test_new_files_become_one_run_each_keyed_by_batch_id(home: Path, instance: dg.DagsterInstance) -> None:
    landing(home, "a.jsonl", "b/c.jsonl.gz", "d.ndjson")
    (home / "landing" / "notes.txt").write_text("not embeddings")
    (home / "landing" / "vectors.xlsx").write_bytes(b"\x00")

    result = tick(instance)
    requests = result.run_requests or []
    keys = sorted(r.run_key for r in requests)
    assert len(keys) == 3 and all(r.run_key == r.partition_key for r in requests)
    expected = sorted(
        batches.batch_id_for(p.relative_to(home / "landing").as_posix(), "")[:-13]
        for p in (home / "landing").rglob("*")
        if p.is_file() and batches.is_supported(p.name)
    )
    assert sorted(k[:-13] for k in keys) == expected  # readable stems a, c, d; the hash tail varies with the etag
    assert {r.tags["nextesy/landing-key"] for r in requests} == {"a.jsonl", "b/c.jsonl.gz", "d.ndjson"}
    assert sorted(instance.get_dynamic_partitions(props.BATCH_PARTITIONS)) == keys
    assert json.loads(result.cursor or "") == {"after": "", "sweeps": 1}


def test_known_batches_are_not_requested_again_and_later_files_are(home: Path, instance: dg.DagsterInstance) -> None:
    landing(home, "a.jsonl")
    first = tick(instance)
    second = tick(instance, first.cursor)
    assert second.run_requests == [] and "no new landing files" in (
        second.skip_reason.skip_message if second.skip_reason else ""
    )
    landing(home, "0-earlier-key.jsonl")  # sorts before every key already seen
    third = tick(instance, second.cursor)
    assert [r.tags["nextesy/landing-key"] for r in third.run_requests or []] == ["0-earlier-key.jsonl"]


def test_the_cursor_advances_page_by_page(
    home: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sensors, "PAGE_SIZE", 2)
    monkeypatch.setattr(sensors, "MAX_PAGES_PER_TICK", 1)
    landing(home, "a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl", "e.jsonl")
    seen: list[str] = []
    cursor = None
    cursors = []
    for _ in range(3):
        result = tick(instance, cursor)
        seen += [r.tags["nextesy/landing-key"] for r in result.run_requests or []]
        cursor = result.cursor
        cursors.append(json.loads(cursor or ""))
    assert seen == ["a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl", "e.jsonl"]
    assert cursors == [{"after": "b.jsonl", "sweeps": 0}, {"after": "d.jsonl", "sweeps": 0}, {"after": "", "sweeps": 1}]


def test_only_unsupported_files_skip_the_tick_without_failing(home: Path, instance: dg.DagsterInstance) -> None:
    (home / "landing").mkdir(parents=True)
    (home / "landing" / "readme.md").write_text("hello")
    result = tick(instance)
    assert result.run_requests == []
    assert "1 unsupported skipped" in (result.skip_reason.skip_message if result.skip_reason else "")


def test_an_empty_or_missing_landing_prefix_is_a_quiet_tick(home: Path, instance: dg.DagsterInstance) -> None:
    result = tick(instance)
    assert result.run_requests == [] and "among 0 listed" in (
        result.skip_reason.skip_message if result.skip_reason else ""
    )


def test_replica_sensor_requests_a_replica_run_after_a_table_materialization(instance: dg.DagsterInstance) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="iceberg_table"))
    context = dg.build_sensor_context(instance=instance, definitions=defs)
    [request] = list(sensors.replica_sensor.evaluate_tick(context).run_requests or [])
    assert request.run_key and request.run_key.startswith("iceberg_table-runless-")
    assert request.run_key.rsplit("-", 1)[1].isdigit()
    # The daemon advances the cursor past the event: the next tick requests nothing.
    assert not list(sensors.replica_sensor.evaluate_tick(context).run_requests or [])
    assert sensors.replica_sensor.job_name == props.REPLICATE_JOB
