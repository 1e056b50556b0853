"""Several processes committing batches to one table at once: every batch lands exactly once."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from nextesy_assets.lib import iceberg, ingest, landing
from nextesy_assets.lib.settings import Settings

from .conftest import good_record, write_lines

BATCHES = 8
ROWS = 5


def commit(batch_id: str) -> bool:
    """In a worker process: commit a converted batch, as the iceberg_table asset does."""
    settings = Settings.load()
    manifest = ingest.load_manifest(settings, batch_id)
    assert manifest is not None
    table = iceberg.embeddings_table(settings)
    _, new = iceberg.commit_data_files(
        table, batch_id, [f.uri for f in manifest.data_files], manifest.rows_good, manifest.rows_in
    )
    return new


def test_concurrent_commits_land_each_batch_exactly_once(home: Path, settings: Settings) -> None:
    for n in range(BATCHES):
        lines = [json.dumps(good_record(1000 * n + i, day=20 + n % 3)) for i in range(ROWS)]
        write_lines(home / "landing" / f"b{n}.jsonl", lines)
    table = iceberg.embeddings_table(settings)
    registrations = landing.scan(settings).new
    for registration in registrations:
        ingest.convert_batch(settings, registration, table.location())
    ids = [r.batch_id for r in registrations]
    # Every batch twice (a retried run racing the first), four writers at once.
    with ProcessPoolExecutor(max_workers=4, mp_context=multiprocessing.get_context("spawn")) as pool:
        outcomes = list(pool.map(commit, ids + ids))
    assert sum(outcomes) == BATCHES  # exactly one of the two attempts at each batch committed it

    table.refresh()
    rows = table.scan().to_arrow()
    assert rows.num_rows == BATCHES * ROWS
    assert sorted(set(rows["batch_id"].to_pylist())) == sorted(ids)
    assert sorted(iceberg.committed_batches(table)) == sorted(ids)
