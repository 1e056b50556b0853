"""Faults thrown between the clients and S3: each fault class survived with exact results, and a store that
stays down fails the sync fast, saying which store.

Not covered yet (see issue 5): faults between pyarrow's GCS client and fake-gcs-server, and truncated
bodies, hung the client in a read with no timeout here; those need a read timeout in the client first."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
from click.testing import CliRunner

from nextesy_assets.cli import main
from nextesy_assets.definitions import defs
from nextesy_assets.lib import iceberg, replication, storage
from nextesy_assets.lib.breaker import BREAKER
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


@pytest.fixture
def s3_proxy(cloud: dict[str, str], s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    proxy = proxy_for(s3_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    yield proxy
    proxy.stop()


def land(settings: Settings, files: int = 2) -> None:
    for n in range(files):
        lines = [json.dumps(good_record(10 * n + i, day=20 + i % 2)) for i in range(6)]
        if n == 0:
            lines.append(BAD_LINES[0][0])
        storage.write_bytes(f"{settings.landing_uri}/f{n}.jsonl", "".join(f"{x}\n" for x in lines).encode())


def assert_exact(settings: Settings, files: int = 2) -> None:
    source = iceberg.embeddings_table(settings)
    rows = source.scan().to_arrow()
    assert rows.num_rows == 6 * files and len(set(rows["id"].to_pylist())) == 6 * files
    quarantined = iceberg.ensure_quarantine_table(iceberg.source_catalog(settings), settings.warehouse_uri)
    assert quarantined.scan().to_arrow().num_rows == 1
    parity = replication.parity(settings, checksum_sample=None)
    assert parity.ok, parity.describe()


FAULTS = {
    "resets": ["reset"] * 3,
    "slowdown-503": ["slowdown"] * 3,
    "errors-500": ["error500"] * 2,
    "stalled": ["stall"],
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_s3_faults_are_survived_with_exact_results(s3_proxy: FaultProxy, settings: Settings, fault: str) -> None:
    land(settings)
    s3_proxy.plan(*FAULTS[fault])
    result = CliRunner().invoke(main, ["sync"])
    assert result.exit_code == 0, result.output
    assert s3_proxy.injected == FAULTS[fault]  # every planned fault really hit a request
    assert_exact(settings)


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
