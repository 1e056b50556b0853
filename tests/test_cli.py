"""The `nextesy` command end to end on the embedded default: demo, sync, repeat, a later file, failures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from nextesy_assets.cli import main
from nextesy_assets.lib import iceberg, replication
from nextesy_assets.lib.settings import Settings

from .conftest import good_record, write_records


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def snapshot_counts(settings: Settings) -> tuple[int, int, int]:
    catalog = iceberg.source_catalog(settings)
    source = iceberg.embeddings_table(settings)
    quarantine = iceberg.ensure_quarantine_table(catalog, settings.warehouse_uri)
    replica = replication.ensure_replica_table(settings, source)
    return len(source.metadata.snapshots), len(quarantine.metadata.snapshots), len(replica.metadata.snapshots)


@pytest.mark.parametrize(
    "command", [[], ["demo"], ["sync"], ["status"], ["ui"], ["serve"]], ids=lambda c: " ".join(c) or "main"
)
def test_every_command_has_help(command: list[str]) -> None:
    assert "Usage: " in run(*command, "--help")


def test_the_console_script_is_installed() -> None:
    out = subprocess.run([Path(sys.executable).parent / "nextesy", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "sync" in out.stdout


def test_demo_then_sync_gives_exact_counts_and_an_equal_replica(home: Path, settings: Settings) -> None:
    run("demo", "--files", "3", "--rows", "40")
    out = run("sync")
    # 3 files x 40 good rows; the first file carries 7 bad records (one per reason, one duplicate key).
    assert "120" in out and "rows committed" in out
    catalog = iceberg.source_catalog(settings)
    source = iceberg.embeddings_table(settings)
    quarantine = iceberg.ensure_quarantine_table(catalog, settings.warehouse_uri)
    assert source.scan().to_arrow().num_rows == 120
    reasons = sorted(quarantine.scan().to_arrow()["reason"].to_pylist())
    assert reasons == sorted(
        [
            "malformed_record",
            "missing_field",
            "bad_type",
            "wrong_dimension",
            "non_finite",
            "bad_timestamp",
            "duplicate_key",
        ]
    )
    replica = replication.ensure_replica_table(settings, source)
    assert replication.watermark(replica) == source.current_snapshot().snapshot_id
    assert replica.scan().to_arrow().num_rows == 120
    assert "README.txt" in out  # the unsupported file is reported, not ingested

    # The runs are in the Dagster instance `dagster dev` opens.
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        assert len(instance.get_runs()) == 5  # three batches, one replica run, one hot index run


def test_a_repeat_sync_changes_nothing_and_a_later_file_is_picked_up_alone(home: Path, settings: Settings) -> None:
    run("demo", "--files", "2", "--rows", "10")
    run("sync")
    before = snapshot_counts(settings)
    out = run("sync")
    assert "0 new" in out and "up to date" in out
    assert snapshot_counts(settings) == before

    write_records(home / "landing" / "later.jsonl", [good_record(i, day=23) for i in range(6)])
    out = run("sync")
    assert "1 new" in out
    source_snapshots, quarantine_snapshots, replica_snapshots = snapshot_counts(settings)
    assert (source_snapshots, quarantine_snapshots, replica_snapshots) == (before[0] + 1, before[1], before[2] + 1)
    rows = iceberg.embeddings_table(settings).scan().to_arrow()
    assert rows.num_rows == 26


def test_a_failed_batch_makes_sync_exit_nonzero_and_names_the_problem(
    home: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_records(home / "landing" / "first.jsonl", [good_record(i) for i in range(3)])
    run("sync")
    # The table now holds 8-d vectors; a run configured for 16-d must be refused, not evolved.
    monkeypatch.setenv("NEXTESY_DIMS", "16")
    write_records(home / "landing" / "second.jsonl", [good_record(i) for i in range(3)])
    out = run("sync", code=1)
    assert "FAILED" in out and "NEXTESY_DIMS=16" in out and "8-d" in out
    assert "1 new (1 failed)" in out


def test_a_bad_setting_is_a_usage_error_naming_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXTESY_DIMS", "many")
    result = CliRunner().invoke(main, ["sync"])
    assert result.exit_code == 2 and "NEXTESY_DIMS must be a whole number, got 'many'" in result.output


def test_sync_then_serve_answers_similarity_queries_over_http(home: Path, settings: Settings) -> None:
    import json
    import socket
    import time
    import urllib.request

    run("demo", "--files", "2", "--rows", "40")
    assert "hot index reflects" in run("sync")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nextesy = Path(sys.executable).parent / "nextesy"
    server = subprocess.Popen([str(nextesy), "serve", "--port", str(port)], start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                health = json.load(urllib.request.urlopen(f"{base}/healthz", timeout=1))
                break
            except OSError:
                time.sleep(0.2)
        snapshot = iceberg.embeddings_table(settings).current_snapshot().snapshot_id
        assert health["vectors"] == 80 and health["snapshot_id"] == snapshot
        stored = iceberg.embeddings_table(settings).scan(limit=1).to_arrow().to_pylist()[0]
        request = urllib.request.Request(
            f"{base}/search",
            data=json.dumps({"id": stored["id"], "model": stored["model"], "k": 3}).encode(),
            headers={"content-type": "application/json"},
        )
        answer = json.load(urllib.request.urlopen(request, timeout=10))
        assert answer["tier"] == "hot" and answer["snapshot_id"] == snapshot and len(answer["results"]) == 3
        vector = {"vector": stored["vector"], "model": stored["model"], "k": 2}
        for _ in range(4):  # new connections, so the kernel spreads them over the worker processes
            request = urllib.request.Request(
                f"{base}/search", data=json.dumps(vector).encode(), headers={"content-type": "application/json"}
            )
            assert json.load(urllib.request.urlopen(request, timeout=10))["results"][0]["id"] == stored["id"]
        if sys.platform.startswith("linux"):
            # The server put itself on huge-page malloc by starting again (same process) with glibc's tunable.
            environ = Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\0")
            assert b"GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in environ
        hot_ok = 'nextesy_search_requests_total{status="200",tier="hot"} '
        for _ in range(3):  # whichever worker answers /metrics counts the requests of all of them
            metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
            assert (
                float(next(line for line in metrics.splitlines() if line.startswith(hot_ok)).split()[-1]) == 5
            )  # the lookup by id and 4 vectors
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_serve_adds_huge_page_malloc_to_glibc_tunables_unless_they_choose_it() -> None:
    from nextesy_assets.cli import HUGE_PAGE_MALLOC, huge_page_malloc

    if not sys.platform.startswith("linux"):
        assert huge_page_malloc({}) is None
        return
    assert huge_page_malloc({}) == HUGE_PAGE_MALLOC
    assert (
        huge_page_malloc({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
        == f"glibc.malloc.arena_max=2:{HUGE_PAGE_MALLOC}"
    )
    # A user's own choice, and the server's environment after its one re-exec, are left as they are.
    assert huge_page_malloc({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
    assert huge_page_malloc({"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{HUGE_PAGE_MALLOC}"}) is None
