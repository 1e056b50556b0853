"""Faults thrown between the clients and S3, and between the replica's clients and GCS: each fault class
survived with exact results, and a store that stays down fails the sync fast, saying which store.

Every client has a short read timeout here, so a body cut short or left hanging fails within seconds and is
retried; each test also has a hard timeout, so a client without one would fail the test, not hang it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
from click.testing import CliRunner

from nextesy_assets.cli import main
from nextesy_assets.definitions import defs
from nextesy_assets.lib import iceberg, replication, storage
from nextesy_assets.lib.breaker import BREAKER, StoreUnavailableError
from nextesy_assets.lib.settings import Settings
from nextesy_assets.sync import dagster_instance, run_sync

from .conftest import BAD_LINES, good_record
from .faults import FaultProxy


@pytest.fixture(autouse=True)
def closed_breaker() -> Iterator[None]:
    BREAKER.reset()
    yield
    BREAKER.reset()


def proxy_for(endpoint: str) -> FaultProxy:
    parsed = urlparse(endpoint)
    return FaultProxy(parsed.hostname or "127.0.0.1", int(parsed.port or 80)).start()


READ_TIMEOUT_S = 2.0


@pytest.fixture(autouse=True)
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seconds, not the production minute: a hung response is noticed quickly, and retried."""
    monkeypatch.setenv("NEXTESY_STORE_CONNECT_TIMEOUT_S", "2")
    monkeypatch.setenv("NEXTESY_STORE_READ_TIMEOUT_S", str(READ_TIMEOUT_S))
    monkeypatch.setenv("NEXTESY_STORE_RETRY_DEADLINE_S", "20")


@pytest.fixture
def s3_proxy(cloud: dict[str, str], s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    proxy = proxy_for(s3_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    yield proxy
    proxy.stop()


@pytest.fixture
def gcs_proxy(cloud: dict[str, str], gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """Between every GCS client (the copies, the checksums, pyiceberg's FileIO for the replica) and the store."""
    proxy = proxy_for(gcs_endpoint)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    yield proxy
    proxy.stop()


def land(settings: Settings, files: int = 2) -> None:
    for n in range(files):
        lines = [json.dumps(good_record(10 * n + i, day=20 + i % 2)) for i in range(6)]
        if n == 0:
            lines.append(BAD_LINES[0][0])
        storage.write_bytes(f"{settings.landing_uri}/f{n}.jsonl", "".join(f"{x}\n" for x in lines).encode())


def assert_exact(settings: Settings, files: int = 2, extra_rows: int = 0) -> None:
    source = iceberg.embeddings_table(settings)
    rows = source.scan().to_arrow()
    expected = 6 * files + extra_rows
    assert rows.num_rows == expected and len(set(rows["id"].to_pylist())) == expected
    quarantined = iceberg.ensure_quarantine_table(iceberg.source_catalog(settings), settings.warehouse_uri)
    assert quarantined.scan().to_arrow().num_rows == 1
    parity = replication.parity(settings, checksum_sample=None)
    assert parity.ok, parity.describe()


FAULTS = {
    "resets": ["reset"] * 3,
    "slowdown-503": ["slowdown"] * 3,
    "errors-500": ["error500"] * 2,
    "stalled": ["stall"],
    # Bodies cut short (then closed), left hanging half sent (only the read timeout ends them), or trickling:
    # a listing, a landing file, table metadata read by pyiceberg, a data file read back.
    "bodies": [
        "truncate",
        "hang@/landing/",
        "truncate@^GET [^?]*metadata\\.json",
        "slow@\\.parquet",
        "truncate@\\.parquet",
    ],
}
# On GCS, fewer runs: every class of connection fault in one sync, every class of body fault in another.
# Attempts count for the breaker there, so no plan holds 5 failures that could come in a row.
GCS_FAULTS = {
    "connections": ["reset", "error503", "reset", "error500", "stall"],
    # The replica's metadata and manifests downloaded by pyiceberg, and the object metadata holding a copy's CRC32C.
    "bodies": [
        "hang@metadata\\.json.*alt=media",
        "truncate@\\.avro.*alt=media",
        "truncate@\\.parquet\\?projection",
        "hang@\\.parquet\\?projection",
        "slow@alt=media",
    ],
}


def sync_through(proxy: FaultProxy, faults: list[str]) -> float:
    proxy.plan(*faults)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["sync"])
    assert result.exit_code == 0, result.output
    assert proxy.injected == faults, (proxy.injected, proxy.pending)  # every planned fault really hit a request
    print("\n".join(proxy.hit_requests))
    return time.monotonic() - started


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_s3_faults_are_survived_with_exact_results(s3_proxy: FaultProxy, settings: Settings, fault: str) -> None:
    land(settings)
    sync_through(s3_proxy, FAULTS[fault])
    assert_exact(settings)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("faults", sorted(GCS_FAULTS))
def test_gcs_faults_are_survived_with_an_exact_replica(gcs_proxy: FaultProxy, settings: Settings, faults: str) -> None:
    land(settings)
    sync_through(gcs_proxy, GCS_FAULTS[faults])
    assert_exact(settings)


@pytest.mark.timeout(180)
def test_a_store_that_stays_down_fails_the_sync_fast_naming_it(
    s3_proxy: FaultProxy, settings: Settings, cloud: dict[str, str]
) -> None:
    land(settings, files=3)
    failures: list[str] = []

    def go_down(registration, number, total):  # type: ignore[no-untyped-def]
        s3_proxy.down = True  # after the listing: the warehouse and landing store stop answering

    summary = run_sync(
        settings,
        defs,
        dagster_instance(settings),
        on_batch_start=go_down,
        on_batch_done=lambda outcome: failures.append(outcome.error or ""),
    )
    assert summary.failed and len(failures) == 3
    store = "s3://" + cloud["landing"].split("/")[2]
    # The first batch wears out the retries and opens the breaker; the others fail at once, without retries.
    assert all(f"store {store} is unavailable" in failure for failure in failures[1:])
    assert s3_proxy.down


@pytest.mark.timeout(180)
def test_a_replica_store_that_stays_down_fails_fast_naming_it(
    gcs_proxy: FaultProxy, settings: Settings, cloud: dict[str, str]
) -> None:
    land(settings)
    assert CliRunner().invoke(main, ["sync"]).exit_code == 0
    storage.write_bytes(f"{settings.landing_uri}/late.jsonl", f"{json.dumps(good_record(99, day=22))}\n".encode())
    gcs_proxy.down = True
    started = time.monotonic()
    result = CliRunner().invoke(main, ["sync"])
    took = time.monotonic() - started
    store = "gs://" + cloud["replica"].split("/")[2]
    assert result.exit_code != 0 and store in result.output, result.output
    # The new batch landed on S3; only the replica is behind. And the breaker is open: no more waiting.
    assert iceberg.embeddings_table(settings).scan().to_arrow().num_rows == 13
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=f"store {store} is unavailable"):
        storage.exists(f"{settings.replica_uri}/anything")
    assert time.monotonic() - started < 0.5 and took < 30, took
    gcs_proxy.down = False
    BREAKER.reset()
    assert CliRunner().invoke(main, ["sync"]).exit_code == 0
    assert_exact(settings, files=2, extra_rows=1)


@pytest.mark.parametrize(
    ("value", "message"), [("soon", "must be a number of seconds, got 'soon'"), ("0", "must be positive, got '0'")]
)
def test_a_bad_timeout_setting_is_refused_naming_it(value: str, message: str) -> None:
    from nextesy_assets.lib.errors import ConfigurationError
    from nextesy_assets.lib.timeouts import StoreTimeouts

    with pytest.raises(ConfigurationError, match=f"NEXTESY_STORE_READ_TIMEOUT_S {message}"):
        StoreTimeouts.from_env({"NEXTESY_STORE_READ_TIMEOUT_S": value})
    assert StoreTimeouts.from_env({"NEXTESY_STORE_READ_TIMEOUT_S": "2.5"}).pair == (10.0, 2.5)
