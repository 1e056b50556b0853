"""The hot tier: the index follows the table (appends, eviction, rebuild, restart), the engines keep one
interface (FAISS, exact, Milvus Lite), and the query service answers, refuses bad requests and counts."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from nextesy_assets import native
from nextesy_assets.lib import iceberg
from nextesy_assets.lib.demo import structured_vectors
from nextesy_assets.lib.hot import checks, search, segments, service
from nextesy_assets.lib.hot.engine import (
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    ExactIndex,
    FaissHnsw,
    exact_search,
    normalise,
)
from nextesy_assets.lib.hot.search import HotIndex, cold_search, from_us
from nextesy_assets.lib.hot.service import QueryError, create_app, keep_staleness, parse
from nextesy_assets.lib.hot.update import update
from nextesy_assets.lib.schema import EMBEDDINGS_ARROW
from nextesy_assets.lib.settings import Settings

from .conftest import DIMS

# Noon today: the asset and the service place the window by the real clock, so the rows must too.
NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
MODELS = ("text-embed-v3", "text-embed-v2")
SOURCES = ("search-api", "support-bot")


@pytest.fixture
def hot_settings(home: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A three-day window; graphs from 50 rows on, so small tables go through FAISS too."""
    monkeypatch.setenv("NEXTESY_HOT_WINDOW_DAYS", "3")
    monkeypatch.setattr(segments, "HNSW_FROM_ROWS", 50)
    return Settings.load()


def append_batch(settings: Settings, batch: str, rows: int, days_ago: list[int], seed: int) -> pa.Table:
    """Commit `rows` rows spread over the given days and both models, one Iceberg snapshot."""
    rng = np.random.default_rng(seed)
    vectors = structured_vectors(rng, rows, DIMS)
    ts = [NOW - timedelta(days=days_ago[i % len(days_ago)], minutes=int(rng.integers(0, 600))) for i in range(rows)]
    table = pa.table(
        {
            "id": [f"{batch}-{i}" for i in range(rows)],
            "model": [MODELS[i % 2] for i in range(rows)],
            "vector": [v.tolist() for v in vectors],
            "ts": ts,
            "source": [SOURCES[(i // 2) % 2] for i in range(rows)],
            "payload": [None] * rows,
            "batch_id": [batch] * rows,
            "ingested_at": [NOW] * rows,
        },
        schema=EMBEDDINGS_ARROW,
    )
    # As parquet_batches writes them: one file per day in the table's data location, then add_files.
    target = iceberg.embeddings_table(settings)
    days = pc.floor_temporal(table["ts"], unit="day")
    uris = []
    for day in sorted(set(days.to_pylist())):
        path = Path(target.location()) / "data" / f"{batch}-{day:%Y%m%d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.filter(pc.equal(days, pa.scalar(day, days.type))), path)
        uris.append(str(path))
    iceberg.commit_data_files(target, batch, uris, rows, rows)
    return table


def table_window(settings: Settings, now: datetime) -> set[tuple[str, str, str]]:
    """(model, id, ts) of every table row in the window that ends `now`."""
    start = datetime.combine(now.date() - timedelta(days=settings.hot_window_days - 1), datetime.min.time(), UTC)
    rows = iceberg.embeddings_table(settings).scan().to_arrow().to_pylist()
    return {(r["model"], r["id"], r["ts"].isoformat()) for r in rows if r["ts"] >= start}


def index_contents(settings: Settings) -> dict[tuple[str, str, str], tuple[float, ...]]:
    index = HotIndex(Path(settings.hot_dir))
    out = {}
    for s in index.segments:
        for row in s.live_positions():
            key = (s.info.model, str(s.ids[row]), datetime.fromtimestamp(int(s.ts_us[row]) / 1e6, UTC).isoformat())
            out[key] = tuple(np.round(s.vectors[row], 6))
    return out


def assert_parity(settings: Settings, now: datetime) -> None:
    contents = index_contents(settings)
    assert set(contents) == table_window(settings, now)
    parity = checks.parity(iceberg.embeddings_table(settings), HotIndex(Path(settings.hot_dir)))
    assert parity.ok, parity
    assert parity.index_rows == len(contents)


def test_parity_after_appends_and_after_window_eviction(hot_settings: Settings) -> None:
    append_batch(hot_settings, "b1", 300, [0, 1, 2, 5], seed=1)  # day 5 is outside the window: never read
    first = update(hot_settings, now=NOW)
    assert first.files_read == 3 and first.rows_added == 225
    assert_parity(hot_settings, NOW)

    append_batch(hot_settings, "b2", 120, [0], seed=2)
    second = update(hot_settings, now=NOW)
    assert (second.files_read, second.rows_added, second.rows_evicted) == (1, 120, 0)  # only the new file
    assert second.previous_snapshot_id == first.source_snapshot_id
    assert_parity(hot_settings, NOW)
    assert update(hot_settings, now=NOW).up_to_date  # a repeat reads nothing

    # Two days later, the two oldest days have left the window; nothing is read, their rows are dropped.
    later = NOW + timedelta(days=2)
    evicted = update(hot_settings, now=later)
    assert evicted.files_read == 0 and evicted.rows_evicted == 150
    assert_parity(hot_settings, later)

    # Deleting the index and rebuilding it from the table gives the same contents, vectors included.
    before = index_contents(hot_settings)
    shutil.rmtree(hot_settings.hot_dir)
    update(hot_settings, now=later)
    assert index_contents(hot_settings) == before


def test_batches_go_to_a_delta_graph_that_is_merged_into_the_main_one(
    hot_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A delta that is not linked into the main graph after each batch (the default) but kept until it is big.
    monkeypatch.setenv("NEXTESY_HOT_FOLD_DELTA_ROWS", "1000")
    hot_settings = Settings.load()
    root = Path(hot_settings.hot_dir)
    states, before, versions = [], None, []
    for number in range(6):
        if number == 2:
            before = HotIndex(root)
        append_batch(hot_settings, f"b{number}", 600 if number == 0 else 20, [0, 0, 1, 1], seed=number)
        published: list[segments.Manifest] = []
        result = update(hot_settings, now=NOW, published=published.append)
        assert 0 < result.visible_s <= result.duration_s
        versions.append([[(s.rows, s.built_rows) for s in m.segments if s.model == MODELS[0]] for m in published])
        assert [m.version for m in published] == list(
            range(published[0].version, published[0].version + len(published))
        )
        assert all(m.rows == published[-1].rows for m in published)  # every version holds the new rows
        mine = [s for s in segments.read_manifest(root).segments if s.model == MODELS[0]]  # type: ignore[union-attr]
        inodes = [(root / segments.SEGMENTS / s.name / segments.VECTORS).stat().st_ino for s in mine]
        states.append([(s.name, s.rows, s.built_rows, inode) for s, inode in zip(mine, inodes, strict=True)])
        assert_parity(hot_settings, NOW)
        if before is not None:
            # The version before (a server may still be serving it) reads what it held: its delta's rows file
            # is the one the new version appended to.
            for old in before.segments:
                again = segments.load_segment(root, old.info, DIMS, before.manifest.window_start)
                assert np.array_equal(again.vectors, old.vectors) and list(again.ids) == list(old.ids)
            before = None

    main = states[0][0]
    assert main[1:3] == (300, 300)  # the first batch: a main graph built at once, 300 rows a model
    # 10 rows a model a batch go to the delta, the main graph untouched: created, grown in place (its rows
    # file linked and appended to), built again at once when it has doubled.
    assert [state[0] for state in states[1:4]] == [main] * 3
    delta = [state[1] for state in states[1:4]]
    assert [(rows, built) for _, rows, built, _ in delta] == [(10, 10), (20, 10), (30, 30)]
    assert delta[0][3] == delta[1][3] != delta[2][3]
    # Past a tenth of the main graph's rows the delta is merged into it: one graph built at once; then anew.
    assert [(rows, built) for _, rows, built, _ in states[4]] == [(340, 340)]
    assert [(rows, built) for _, rows, built, _ in states[5]] == [(340, 340), (10, 10)]
    # A batch that sets off a rebuild or a merge is published first in the delta grown in place, the rebuilt
    # graph after it; a batch with nothing due is published once.
    assert versions[1:] == [
        [[(300, 300), (10, 10)]],
        [[(300, 300), (20, 10)]],
        [[(300, 300), (30, 10)], [(300, 300), (30, 30)]],
        [[(300, 300), (40, 30)], [(340, 340)]],
        [[(340, 340), (10, 10)]],
    ]

    index = HotIndex(root)
    assert sorted(s.info.model for s in index.segments) == sorted(MODELS * 2)
    assert checks.recall_at_k(index).recall >= 0.95


def test_a_delta_holding_enough_rows_is_linked_into_the_main_graph_in_place(
    hot_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nextesy_assets.lib.errors import ConfigurationError

    monkeypatch.setenv("NEXTESY_HOT_FOLD_DELTA_ROWS", "15")
    settings = Settings.load()
    assert settings.hot_fold_delta_rows == 15
    root = Path(settings.hot_dir)
    states, versions, tables = [], [], []
    for number in range(5):
        tables.append(append_batch(settings, f"f{number}", 600 if number == 0 else 20, [0, 1], seed=40 + number))
        before = HotIndex(root) if number == 2 else None
        published: list[segments.Manifest] = []
        update(settings, now=NOW, published=published.append)
        versions.append([[(s.rows, s.built_rows) for s in m.segments if s.model == MODELS[0]] for m in published])
        mine = [s for s in segments.read_manifest(root).segments if s.model == MODELS[0]]  # type: ignore[union-attr]
        states.append([(s.name, (root / segments.SEGMENTS / s.name / segments.VECTORS).stat().st_ino) for s in mine])
        assert_parity(settings, NOW)
        if before is not None:
            # The main graph the fold extended reads as it was: its rows file is the one the new version appended to.
            for old in before.segments:
                again = segments.load_segment(root, old.info, DIMS, before.manifest.window_start)
                assert np.array_equal(again.vectors, old.vectors) and list(again.ids) == list(old.ids)

    # 10 rows a model a batch: into the delta; at 20 (>= 15) the delta is linked into the main graph in place
    # (its rows file linked and appended to, its graph grown, built_rows kept), published after the batch;
    # once 40 rows are linked in since the main graph was built (over a tenth of 300), all are built at once.
    assert versions[1:] == [
        [[(300, 300), (10, 10)]],
        [[(300, 300), (20, 10)], [(320, 300)]],
        [[(320, 300), (10, 10)]],
        [[(320, 300), (20, 10)], [(340, 340)]],
    ]
    main_inode = states[0][0][1]
    assert states[2][0][1] == main_inode and states[2][0][0] != states[0][0][0]
    assert states[4][0][1] != main_inode
    # The folded rows are found by the graph walk: each stored vector of batch f2 is its own nearest neighbour.
    index = HotIndex(root)
    assert [len(s.ids) for s in index.segments if s.info.model == MODELS[0]] == [340]
    for row in tables[2].to_pylist():
        hits = index.search(np.asarray(row["vector"], np.float32), 1, row["model"])
        assert hits[0].id == row["id"] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert checks.recall_at_k(index).recall >= 0.95

    # Deleting the index and rebuilding it from the table gives the same contents.
    before_rebuild = index_contents(settings)
    shutil.rmtree(settings.hot_dir)
    update(settings, now=NOW)
    assert index_contents(settings) == before_rebuild
    for bad in ("0", "some"):
        monkeypatch.setenv("NEXTESY_HOT_FOLD_DELTA_ROWS", bad)
        with pytest.raises(ConfigurationError, match="NEXTESY_HOT_FOLD_DELTA_ROWS"):
            Settings.load()


def test_one_update_writes_the_index_at_a_time(hot_settings: Settings) -> None:
    import fcntl
    import threading

    from nextesy_assets.lib.hot.update import WRITER_LOCK

    root = Path(hot_settings.hot_dir)
    append_batch(hot_settings, "b1", 200, [0, 1], seed=21)
    update(hot_settings, now=NOW)
    version = segments.read_manifest(root).version  # type: ignore[union-attr]
    append_batch(hot_settings, "b2", 40, [0], seed=22)
    results = []
    with open(root / WRITER_LOCK, "a") as held:  # another writer, mid-update
        fcntl.flock(held, fcntl.LOCK_EX)
        second = threading.Thread(target=lambda: results.append(update(hot_settings, now=NOW)))
        second.start()
        second.join(timeout=3)
        # It waits: the index is as the first writer left it.
        assert second.is_alive() and segments.read_manifest(root).version == version  # type: ignore[union-attr]
    second.join(timeout=60)
    assert not second.is_alive() and results[0].rows_added == 40
    assert_parity(hot_settings, NOW)


def spy_on_walks(graph: FaissHnsw) -> list[int]:
    """The breadths (efSearch) of the graph's native walks from now on, one per walk."""
    walker = graph._native_walker()
    assert walker is not None
    breadths: list[int] = []

    class Spy:
        def search(self, query: np.ndarray, ef: int, take: int, allowed: np.ndarray | None = None) -> np.ndarray:
            breadths.append(ef)
            return walker.search(query, ef, take, allowed)  # type: ignore[attr-defined]

    graph._walker = Spy()
    return breadths


def test_the_walk_breadth_is_a_setting(hot_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from nextesy_assets.lib.errors import ConfigurationError

    table = append_batch(hot_settings, "b1", 400, [0], seed=31)
    update(hot_settings, now=NOW)
    monkeypatch.setenv("NEXTESY_HOT_EF_SEARCH", "40")
    settings = Settings.load()
    assert settings.hot_ef_search == 40
    index = create_app(settings, refresh_every_s=None).state.service.index
    graphs = {s.info.model: s.index for s in index.segments}
    assert all(isinstance(g, FaissHnsw) and g.ef_search == 40 for g in graphs.values())
    row = table.to_pylist()[0]
    breadths = spy_on_walks(graphs[row["model"]])  # type: ignore[arg-type]
    assert len(index.search(np.asarray(row["vector"], np.float32), 10, row["model"])) == 10
    assert breadths == [40] and HNSW_EF_SEARCH != 40
    # So is who walks the graph: FAISS's own search instead of the native walk, for the same answers.
    monkeypatch.setenv("NEXTESY_HOT_WALK", "faiss")
    by_faiss = create_app(Settings.load(), refresh_every_s=None).state.service.index
    assert all(not s.index.native_walk for s in by_faiss.segments)  # type: ignore[union-attr]
    vector = np.asarray(row["vector"], np.float32)
    assert [h.id for h in by_faiss.search(vector, 10, row["model"])] == [
        h.id for h in index.search(vector, 10, row["model"])
    ]
    monkeypatch.setenv("NEXTESY_HOT_WALK", "hnswlib")
    with pytest.raises(ConfigurationError, match="NEXTESY_HOT_WALK must be one of native, faiss, got 'hnswlib'"):
        Settings.load()
    monkeypatch.delenv("NEXTESY_HOT_WALK")
    for bad in ("0", "wide"):
        monkeypatch.setenv("NEXTESY_HOT_EF_SEARCH", bad)
        with pytest.raises(ConfigurationError, match="NEXTESY_HOT_EF_SEARCH"):
            Settings.load()


def test_days_leaving_the_window_are_masked_in_the_graph_then_rebuilt_away(hot_settings: Settings) -> None:
    root = Path(hot_settings.hot_dir)
    table = append_batch(hot_settings, "b1", 400, [2, 1, 1, 0, 0], seed=12)
    update(hot_settings, now=NOW)
    first = HotIndex(root)

    # A day later the oldest day (a fifth of the rows) is out: the same files, its rows masked.
    later = NOW + timedelta(days=1)
    assert update(hot_settings, now=later).rows_evicted == 80
    index = HotIndex(root)
    assert [s.info.name for s in index.segments] == [s.info.name for s in first.segments]
    assert all((s.info.rows, s.live_rows) == (200, 160) and s.live is not None for s in index.segments)
    assert_parity(hot_settings, later)
    gone = [r for r in table.to_pylist() if r["ts"] < NOW - timedelta(days=1, hours=12)]
    for row in gone[:10]:
        hits = index.search(np.asarray(row["vector"], np.float32), 10, row["model"])
        assert len(hits) == 10 and row["id"] not in {h.id for h in hits}
        assert index.lookup(row["id"], row["model"]) is None
    assert checks.recall_at_k(index).recall >= 0.95  # judged on the live rows only
    # Its exact answers, read a few rows at a time, are a scan of the live rows: a gone row asked for is not
    # its own answer, and the chunks merge as one scan would rank them.
    model = gone[0]["model"]
    mine = [s for s in index.segments if s.info.model == model]
    asks = normalise(np.asarray([r["vector"] for r in gone if r["model"] == model][:5], np.float32))
    rows = [(s, r) for s in mine for r in s.live_positions().tolist()]
    _, labels = exact_search(np.concatenate([s.vectors[s.live_positions()] for s in mine]), asks, 10)
    by_scan = [
        {(rows[i][0].ids[rows[i][1]], from_us(int(rows[i][0].ts_us[rows[i][1]])).isoformat()) for i in q}
        for q in labels
    ]
    assert checks.exact_keys(mine, asks, 10, chunk=7) == by_scan
    assert all(len(keys) == 10 for keys in by_scan) and len(by_scan) > 1
    assert not {r["id"] for r in gone} & {key[0] for keys in by_scan for key in keys}
    segment = index.segments[0]
    assert segment.index._standing[0] is segment.live  # type: ignore[attr-defined]  # one bitmap for all queries
    # The native walk's breadth counts only the rows it may answer: it is not widened over the dead ones.
    breadths = spy_on_walks(segment.index)  # type: ignore[arg-type]
    row = next(r for r in table.to_pylist() if r["model"] == segment.info.model)
    assert len(index.search(np.asarray(row["vector"], np.float32), 10, row["model"])) == 10
    assert breadths == [HNSW_EF_SEARCH]

    # Another day and most rows are dead: each segment is rebuilt from its live rows alone.
    latest = NOW + timedelta(days=2)
    assert update(hot_settings, now=latest).rows_evicted == 160
    rebuilt = HotIndex(root)
    assert not {s.info.name for s in rebuilt.segments} & {s.info.name for s in first.segments}
    assert all((s.info.rows, s.live_rows, s.live) == (80, 80, None) for s in rebuilt.segments)
    assert all(s.info.engine == "faiss-hnsw" for s in rebuilt.segments)
    assert_parity(hot_settings, latest)
    assert checks.recall_at_k(rebuilt).recall >= 0.95


def test_a_graph_counts_the_rows_it_was_built_with_at_once(hot_settings: Settings, tmp_path: Path) -> None:
    """An exact segment that reaches HNSW_FROM_ROWS gets a graph built at once over all its rows (so no
    rebuild is due for growth); rows grown into a graph later do not count as built."""
    vectors = normalise(structured_vectors(np.random.default_rng(14), 65, DIMS))

    def meta(first: int, rows: int) -> pa.Table:
        return pa.table(
            {"id": [f"r{i}" for i in range(first, first + rows)], "ts_us": [0] * rows, "source": ["s"] * rows}
        )

    def load(info: segments.SegmentInfo) -> segments.Segment:
        return segments.load_segment(tmp_path, info, DIMS, 0, serve=False)

    exact = segments.build_segment(tmp_path, "a", "m", vectors[:30], meta(0, 30), {0: 30})
    assert (exact.engine, exact.built_rows) == ("exact", 30)
    graph = segments.build_segment(tmp_path, "b", "m", vectors[30:60], meta(30, 30), {0: 60}, load(exact))
    assert (graph.engine, graph.rows, graph.built_rows) == ("faiss-hnsw", 60, 60)
    grown = segments.build_segment(tmp_path, "c", "m", vectors[60:], meta(60, 5), {0: 65}, load(graph))
    assert (grown.engine, grown.rows, grown.built_rows) == ("faiss-hnsw", 65, 60)
    assert np.array_equal(load(grown).vectors, vectors)


def test_a_rewritten_day_is_read_again_and_its_old_rows_masked(hot_settings: Settings) -> None:
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    append_batch(hot_settings, "b1", 640, [0] * 30 + [1, 1], seed=13)  # 20 rows a model yesterday, 300 today
    update(hot_settings, now=NOW)
    # Compaction of yesterday: its files are replaced by one file holding the same rows.
    target = iceberg.embeddings_table(hot_settings)
    start = datetime.combine((NOW - timedelta(days=1)).date(), datetime.min.time(), UTC)
    day = And(GreaterThanOrEqual("ts", start.isoformat()), LessThan("ts", (start + timedelta(days=1)).isoformat()))
    compacted = Path(target.location()) / "data" / "compacted.parquet"
    pq.write_table(target.scan(row_filter=day).to_arrow(), compacted)
    with target.transaction() as tx:
        tx.delete(day)  # whole files: the filter is the day's partition
        tx.add_files([str(compacted)])

    result = update(hot_settings, now=NOW)
    assert (result.files_read, result.rows_added, result.rows_evicted) == (1, 40, 0)
    yesterday = (start.date() - segments.EPOCH).days
    # Per model: the main graph with yesterday's old rows masked, and the re-read rows linked in after them
    # (published first in a delta of their own).
    held = [
        (s.info.model, s.info.replaced, s.info.rows, s.live_rows) for s in HotIndex(Path(hot_settings.hot_dir)).segments
    ]
    assert sorted(held) == sorted([(m, [[yesterday, 320]], 340, 320) for m in MODELS])
    assert_parity(hot_settings, NOW)
    assert update(hot_settings, now=NOW).up_to_date


def test_a_restart_loads_the_index_without_rebuilding_it(hot_settings: Settings) -> None:
    append_batch(hot_settings, "b1", 400, [0, 1], seed=3)
    update(hot_settings, now=NOW)
    files = {p: p.stat().st_mtime_ns for p in Path(hot_settings.hot_dir).rglob("*") if p.is_file()}
    query = normalise(structured_vectors(np.random.default_rng(9), 1, DIMS))[0]
    first = HotIndex(Path(hot_settings.hot_dir)).search(query, 10, MODELS[0])

    assert update(hot_settings, now=NOW).up_to_date  # the "restarted" writer finds nothing to do
    restarted = HotIndex(Path(hot_settings.hot_dir))
    assert restarted.search(query, 10, MODELS[0]) == first
    assert {p: p.stat().st_mtime_ns for p in Path(hot_settings.hot_dir).rglob("*") if p.is_file()} == files
    assert any(s.info.engine == "faiss-hnsw" for s in restarted.segments)


def test_exact_search_breaks_a_tie_at_the_cut_by_the_earlier_row() -> None:
    rng = np.random.default_rng(7)
    data = normalise(rng.standard_normal((5_000, 16)).astype(np.float32))
    copies = np.sort(rng.choice(len(data), size=40, replace=False))
    data[copies] = data[copies[0]]  # 40 rows with one vector: all tie as its nearest neighbours
    scores, labels = exact_search(data, data[copies[:1]], 10)
    assert labels[0].tolist() == copies[:10].tolist()
    assert np.all(scores[0] == scores[0, 0])
    # Masked rows are not candidates; the tie goes to the earliest allowed rows.
    allowed = np.ones(len(data), dtype=bool)
    allowed[copies[:5]] = False
    assert exact_search(data, data[copies[:1]], 10, allowed)[1][0].tolist() == copies[5:15].tolist()


def test_the_cold_tier_returns_exactly_the_brute_force_answer(hot_settings: Settings) -> None:
    append_batch(hot_settings, "b1", 300, [0, 1, 4, 6], seed=4)
    update(hot_settings, now=NOW)
    rows = iceberg.embeddings_table(hot_settings).scan().to_arrow().to_pylist()
    query = normalise(structured_vectors(np.random.default_rng(5), 1, DIMS))[0]
    since, until = NOW - timedelta(days=7), NOW - timedelta(days=1)
    matching = [r for r in rows if r["model"] == MODELS[1] and since <= r["ts"] < until and r["source"] == SOURCES[0]]
    data = normalise(np.asarray([r["vector"] for r in matching], dtype=np.float32))
    scores = data @ query
    order = sorted(range(len(matching)), key=lambda i: (-scores[i], matching[i]["id"]))[:10]
    expected = [(matching[i]["id"], round(float(scores[i]), 5)) for i in order]

    client = TestClient(create_app(hot_settings, refresh_every_s=None))
    body = {"vector": query.tolist(), "k": 10, "model": MODELS[1], "source": SOURCES[0]}
    body |= {"since": since.isoformat(), "until": until.isoformat()}
    answer = client.post("/search", json=body).json()
    assert answer["tier"] == "cold"
    assert answer["snapshot_id"] == iceberg.embeddings_table(hot_settings).current_snapshot().snapshot_id
    assert [(r["id"], round(r["score"], 5)) for r in answer["results"]] == expected

    snapshot = iceberg.embeddings_table(hot_settings).current_snapshot().snapshot_id
    direct = cold_search(
        iceberg.embeddings_table(hot_settings), snapshot, query, 10, MODELS[1], SOURCES[0], since, until
    )
    assert [(h.id, round(h.score, 5)) for h in direct] == expected


def test_cold_queries_are_answered_by_a_child_process_started_again_if_it_dies(hot_settings: Settings) -> None:
    import signal

    append_batch(hot_settings, "b1", 60, [0, 0, 9], seed=4)
    update(hot_settings, now=NOW)
    app = create_app(hot_settings, refresh_every_s=None)
    client = TestClient(app)
    old = {"vector": [0.1] * DIMS, "model": MODELS[0], "until": (NOW - timedelta(days=8)).isoformat()}
    first = client.post("/search", json=old).json()
    assert first["tier"] == "cold" and first["results"]
    cold = app.state.service.cold
    (child,) = cold._pool._processes
    assert child != os.getpid()
    assert app.state.service._table is None  # the worker itself never opened the table

    os.kill(child, signal.SIGKILL)
    for _ in range(100):  # the executor notices the death on its own thread
        if cold._pool._broken:
            break
        time.sleep(0.05)
    again = client.post("/search", json=old)  # a new child answers: the query is not failed for an old crash
    assert again.status_code == 200 and again.json()["results"] == first["results"]
    assert set(cold._pool._processes) != {child}
    by_id = client.post("/search", json={"id": "no-such-id", "model": MODELS[0]})
    assert by_id.status_code == 404  # looked up in the hot index, then in the table by the child
    cold.close()


def run_script(settings: Settings, tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    """Run `source` as a main script of its own, with the pickled `settings` path as its argument."""
    (tmp_path / "settings.pickle").write_bytes(pickle.dumps(settings))
    (tmp_path / "main.py").write_text(source)
    return subprocess.run(
        [sys.executable, str(tmp_path / "main.py"), str(tmp_path / "settings.pickle")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )


def test_a_cold_child_process_ends_with_the_worker_that_started_it(hot_settings: Settings, tmp_path: Path) -> None:
    import psutil

    append_batch(hot_settings, "b1", 20, [0], seed=4)
    worker = (
        "import os, pickle, sys\n"
        "from nextesy_assets.lib.hot.cold import ColdProcess\n"
        "if __name__ == '__main__':\n"
        "    cold = ColdProcess(pickle.loads(open(sys.argv[1], 'rb').read()))\n"
        "    assert cold.snapshot() is not None\n"
        "    print(*cold._pool._processes, flush=True)\n"
        "    os._exit(0)  # as a worker stopped by a signal: no pool shutdown\n"
    )
    ran = run_script(hot_settings, tmp_path, worker)  # returns once nothing holds its output open
    assert ran.returncode == 0, ran.stderr
    child = int(ran.stdout.split()[-1])
    for _ in range(100):
        try:
            if psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    else:
        psutil.Process(child).kill()
        raise AssertionError(f"the cold tier's process {child} outlived its worker")


def test_cold_queries_are_read_in_the_worker_when_no_child_process_can_start(
    hot_settings: Settings, tmp_path: Path
) -> None:
    append_batch(hot_settings, "b1", 20, [0], seed=4)
    unguarded = (  # no `if __name__ == "__main__":`: a spawned child runs it again, and dies
        "import pickle, sys\n"
        "from nextesy_assets.lib.hot.cold import ColdProcess\n"
        "cold = ColdProcess(pickle.loads(open(sys.argv[1], 'rb').read()))\n"
        "print(cold.snapshot(), cold.snapshot(), cold._fallback is not None)\n"
    )
    ran = run_script(hot_settings, tmp_path, unguarded)
    snapshot = iceberg.embeddings_table(hot_settings).current_snapshot().snapshot_id
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == [str(snapshot), str(snapshot), "True"]
    assert "cold queries are read in the worker" in ran.stderr


def test_hot_answers_by_vector_and_by_id_with_filters(hot_settings: Settings) -> None:
    table = append_batch(hot_settings, "b1", 400, [0, 1, 2], seed=6)
    update(hot_settings, now=NOW)
    client = TestClient(create_app(hot_settings, refresh_every_s=None))
    stored = table.slice(0, 1).to_pylist()[0]
    answer = client.post("/search", json={"id": stored["id"], "k": 5}).json()
    assert answer["tier"] == "hot" and len(answer["results"]) == 5
    assert stored["id"] not in {r["id"] for r in answer["results"]}

    since = (NOW - timedelta(hours=6)).isoformat()
    body = {"vector": stored["vector"], "model": stored["model"], "source": SOURCES[1], "since": since}
    answer = client.post("/search", json=body).json()
    assert answer["tier"] == "hot" and answer["results"]
    assert all(r["source"] == SOURCES[1] and r["ts"] >= since for r in answer["results"])
    health = client.get("/healthz").json()
    assert health["vectors"] == 400 and health["snapshot_id"] == answer["snapshot_id"]


BAD_REQUESTS: dict[str, tuple[dict[str, object] | str, int, str]] = {
    "wrong dimension": ({"vector": [0.1] * (DIMS + 1), "model": MODELS[0]}, 422, "9 values"),
    "nan": ({"vector": [math.nan] + [0.1] * (DIMS - 1), "model": MODELS[0]}, 422, "NaN"),
    "k zero": ({"vector": [0.1] * DIMS, "model": MODELS[0], "k": 0}, 422, "k"),
    "k too large": ({"vector": [0.1] * DIMS, "model": MODELS[0], "k": 100_000}, 422, "k"),
    "unknown model": ({"vector": [0.1] * DIMS, "model": "no-such-model"}, 404, "no-such-model"),
    "no model among several": ({"vector": [0.1] * DIMS}, 422, "model is required"),
    "neither vector nor id": ({"model": MODELS[0]}, 422, "exactly one of vector or id"),
    "both vector and id": ({"vector": [0.1] * DIMS, "id": "b1-0"}, 422, "exactly one of vector or id"),
    "unknown id": ({"id": "no-such-id"}, 404, "no-such-id"),
    "empty range": (
        {"vector": [0.1] * DIMS, "model": MODELS[0], "since": NOW.isoformat(), "until": NOW.isoformat()},
        422,
        "before until",
    ),
    "time without zone": ({"vector": [0.1] * DIMS, "model": MODELS[0], "since": "2026-11-25T10:00:00"}, 422, "since"),
    "zero vector": ({"vector": [0.0] * DIMS, "model": MODELS[0]}, 422, "zeros"),
    "hot tier for an old range": (
        {"vector": [0.1] * DIMS, "model": MODELS[0], "tier": "hot", "since": "2020-01-01T00:00:00Z"},
        422,
        "before the hot window",
    ),
    "not json": ("{not json", 422, "not valid JSON"),
    "vector of strings": ({"vector": ["0.1"] * DIMS, "model": MODELS[0]}, 422, "flat list of numbers"),
    "nested vector": ({"vector": [[0.1]] * DIMS, "model": MODELS[0]}, 422, "flat list of numbers"),
    "overflowing value": ({"vector": [1e39] + [0.1] * (DIMS - 1), "model": MODELS[0]}, 422, "Inf"),
    "unknown field": ({"vector": [0.1] * DIMS, "model": MODELS[0], "top_k": 3}, 422, "top_k"),
}


@pytest.fixture
def client(hot_settings: Settings) -> TestClient:
    append_batch(hot_settings, "b1", 100, [0, 1], seed=7)
    update(hot_settings, now=datetime.now(UTC))
    return TestClient(create_app(hot_settings, refresh_every_s=None))


@pytest.mark.parametrize("case", list(BAD_REQUESTS), ids=str)
def test_every_bad_request_gets_a_4xx_naming_the_problem(client: TestClient, case: str) -> None:
    body, status, words = BAD_REQUESTS[case]
    # Python's JSON writes NaN as a bare literal, as a careless client would send it.
    content = body if isinstance(body, str) else json.dumps(body)
    response = client.post("/search", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert words in response.text


def test_a_request_vector_is_read_natively_to_the_same_float32_values_as_numpy_reads_it() -> None:
    rng = np.random.default_rng(3)
    values = [
        *rng.standard_normal(200).tolist(),  # 17 significant digits
        *rng.standard_normal(200).astype(np.float32).tolist(),
        *(rng.standard_normal(50) * 1e-30).tolist(),
        *rng.integers(-(2**40), 2**40, 20).tolist(),
        0,
        -0.0,
        1.5e-45,
        3.4028235e38,
        123456789012345678,
        0.1,
        2.5e-3,
    ]
    texts = [json.dumps(values), json.dumps(values).replace("e-", "E-"), "[" + ",\n ".join(map(repr, values)) + "]"]
    for text in texts:
        body = ('{"k": 7, "vector": ' + text + ', "model": "m"}').encode()
        assert native.object_vector(body) is not None  # the native path, not the fallback
        request, vector = parse(body)
        expected = np.asarray(json.loads(text)).astype(np.float32)
        assert vector is not None and vector.dtype == np.float32
        assert vector.tobytes() == expected.tobytes()  # bit for bit, -0.0 included
        assert (request.k, request.model) == (7, "m")
    # The last of a repeated key wins, as in every JSON reader here.
    _, vector = parse(b'{"vector": [1, 2], "vector": [3.5, 4]}')
    assert vector is not None and vector.tolist() == [3.5, 4.0]
    # What is left of the body is still validated field by field.
    with pytest.raises(QueryError, match="k"):
        parse(b'{"vector": [1.0, 2.0], "k": "many"}')
    # Bare NaN (Python's json.dumps) is read either way, for the service to name its position.
    _, vector = parse(b'{"vector": [NaN, 1.0], "k": 1}')
    assert vector is not None and math.isnan(vector[0]) and vector[1] == 1.0


def test_search_answers_other_methods_with_405_and_an_unexpected_failure_with_500(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST /search skips FastAPI's middleware (service._App); what that middleware did still happens."""
    assert client.get("/search").status_code == 405
    # A QueryError is answered with its status and counted under it.
    assert client.post("/search", json={"model": MODELS[0]}).status_code == 422
    assert 'nextesy_search_requests_total{status="422",tier="none"} 1.0' in client.get("/metrics").text
    service = client.app.state.service  # type: ignore[attr-defined]

    def broken(*args: object) -> object:
        raise RuntimeError("the index fell over")

    monkeypatch.setattr(service, "search", broken)
    body = {"vector": [0.1] * DIMS, "model": MODELS[0]}
    with pytest.raises(RuntimeError, match="fell over"):  # raised to the server, which logs it
        client.post("/search", json=body)
    assert TestClient(client.app, raise_server_exceptions=False).post("/search", json=body).status_code == 500


def test_the_search_route_is_in_the_openapi_schema(client: TestClient) -> None:
    post = client.get("/openapi.json").json()["paths"]["/search"]["post"]
    assert "vector" in post["requestBody"]["content"]["application/json"]["schema"]["properties"]


def test_the_metrics_move_when_queries_run(client: TestClient) -> None:
    def sample(text: str, name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    before = client.get("/metrics").text
    assert sample(before, "nextesy_hot_index_vectors") > 0
    for _ in range(3):
        assert client.post("/search", json={"vector": [0.1] * DIMS, "model": MODELS[0]}).status_code == 200
    assert client.post("/search", json={"vector": [0.1] * 3, "model": MODELS[0]}).status_code == 422
    after = client.get("/metrics").text
    hot_ok = 'nextesy_search_requests_total{status="200",tier="hot"}'
    assert sample(after, hot_ok) - sample(before, hot_ok) == 3
    assert sample(after, 'nextesy_search_seconds_count{tier="hot"}') == 3
    assert sample(after, 'nextesy_search_requests_total{status="422"') >= 1
    assert "nextesy_hot_index_staleness_seconds" in after


def test_workers_report_the_staleness_their_server_keeps_without_reading_the_table(hot_settings: Settings) -> None:
    append_batch(hot_settings, "b1", 100, [0], seed=8)
    update(hot_settings, now=datetime.now(UTC))
    append_batch(hot_settings, "b2", 60, [0], seed=9)  # the table is now a snapshot ahead of the index
    lag = multiprocessing.RawArray("d", [math.nan, math.nan])
    app = create_app(hot_settings, refresh_every_s=None, lag=lag)
    client = TestClient(app)

    def gauge(name: str) -> str | None:
        lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith(name + " ")]
        return lines[0].split()[1] if lines else None

    assert app.state.service.staleness() is None  # not measured yet
    stop = threading.Event()
    stop.set()  # one round, as the server's parent process runs it every few seconds
    keep_staleness(hot_settings, lag, stop)
    assert lag[0] == 1 and lag[1] >= 0
    assert gauge("nextesy_hot_index_staleness_snapshots") == "1.0"
    assert app.state.service._table is None  # the worker never opened the table for it


def test_the_service_picks_up_a_new_index_version_without_a_restart(hot_settings: Settings) -> None:
    append_batch(hot_settings, "b1", 100, [0], seed=8)
    update(hot_settings, now=datetime.now(UTC))
    app = create_app(hot_settings, refresh_every_s=None)
    client = TestClient(app)
    assert client.get("/healthz").json()["vectors"] == 100
    append_batch(hot_settings, "b2", 60, [0], seed=9)
    update(hot_settings, now=datetime.now(UTC))
    assert app.state.service.index.refresh()
    assert client.get("/healthz").json()["vectors"] == 160


def test_a_background_thread_below_the_queries_priority_picks_up_new_versions(hot_settings: Settings) -> None:
    append_batch(hot_settings, "b1", 100, [0], seed=8)
    update(hot_settings, now=datetime.now(UTC))
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with TestClient(create_app(hot_settings, refresh_every_s=0.05)) as client:
        refresher = next(t for t in threading.enumerate() if t.name == "hot-index-refresh")
        assert client.get("/healthz").json()["vectors"] == 100
        append_batch(hot_settings, "b2", 60, [0], seed=9)
        update(hot_settings, now=datetime.now(UTC))
        for _ in range(200):
            if client.get("/healthz").json()["vectors"] == 160:
                break
            time.sleep(0.05)
        assert client.get("/healthz").json()["vectors"] == 160
        assert os.getpriority(os.PRIO_PROCESS, refresher.native_id) == min(19, mine + service.REFRESH_NICENESS)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine


def test_the_service_reads_the_manifest_again_only_once_an_update_replaced_it(
    hot_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    append_batch(hot_settings, "b1", 100, [0], seed=8)
    update(hot_settings, now=datetime.now(UTC))
    index = HotIndex(Path(hot_settings.hot_dir))
    reads: list[Path] = []
    real = search.read_manifest
    monkeypatch.setattr(search, "read_manifest", lambda root: reads.append(root) or real(root))
    assert not index.refresh() and not index.refresh()
    assert reads == []  # the same file: not parsed again
    append_batch(hot_settings, "b2", 60, [0], seed=9)
    update(hot_settings, now=datetime.now(UTC))
    assert index.refresh() and index.rows == 160
    assert not index.refresh()
    assert len(reads) == 1
    # However it looks, the file is read again once a while has passed.
    monkeypatch.setattr(search, "MANIFEST_READ_AT_LEAST_EVERY_S", 0.0)
    assert not index.refresh() and len(reads) == 2


@pytest.mark.parametrize("engine", ["faiss-hnsw", "faiss-hnsw-faiss-walk", "exact", "milvus-lite"])
def test_every_engine_meets_the_index_interface(engine: str, tmp_path: Path) -> None:
    dims, rng = 32, np.random.default_rng(11)
    data = structured_vectors(rng, 3000, dims)
    queries = normalise(structured_vectors(np.random.default_rng(12), 20, dims))

    def make():  # type: ignore[no-untyped-def]
        if engine.startswith("faiss-hnsw"):
            graph = FaissHnsw(dims)
            graph.native_walk = engine == "faiss-hnsw"  # else FAISS's own search walks the graph
            return graph
        if engine == "exact":
            return ExactIndex(dims)
        from nextesy_assets.lib.hot.milvus import MilvusIndex

        return MilvusIndex(str(tmp_path / "milvus.db"), "segment_0", dims)

    def reopen(index):  # type: ignore[no-untyped-def]
        if engine.startswith("faiss-hnsw"):
            graph = FaissHnsw.load(tmp_path / "idx", dims)
            graph.native_walk = engine == "faiss-hnsw"
            return graph
        if engine == "exact":
            return ExactIndex.load(tmp_path / "idx", dims)
        index.close()
        from nextesy_assets.lib.hot.milvus import MilvusIndex

        return MilvusIndex(str(tmp_path / "milvus.db"), "segment_0", dims)

    index = make()
    index.add(data[:2000])
    index.add(data[2000:])  # labels continue where the first call stopped
    assert len(index) == 3000
    _, truth = exact_search(data, queries, 10)
    scores, labels = index.search(queries, 10)
    assert labels.shape == (20, 10) and np.all(np.diff(scores, axis=1) <= 1e-6)
    recall = np.mean([len(set(t) & set(g)) / 10 for t, g in zip(truth, labels, strict=True)])
    assert recall >= 0.95

    allowed = np.zeros(3000, dtype=bool)
    allowed[2500:2600] = True
    _, filtered = index.search(queries, 10, allowed)
    # A graph walk under a selective filter may come back short (-1); HotIndex answers those exactly.
    assert set(filtered.ravel()) - {-1} <= set(range(2500, 2600))
    assert (filtered >= 0).sum() >= len(queries)

    index.save(tmp_path / "idx")
    again = reopen(index)
    assert len(again) == 3000
    assert np.array_equal(again.search(queries, 10)[1], labels)


def test_a_loaded_segment_reads_its_ids_and_sources_as_written(tmp_path: Path) -> None:
    ids = ["plain", "añadido-é", "雪-1", "🙂", "", "x" * 300]
    sources = ["search-api", None, "support-bot", None, "search-api", "support-bot"]
    vectors = normalise(structured_vectors(np.random.default_rng(3), len(ids), 8))
    day = segments.US_PER_DAY * 20_000
    meta = pa.table({"id": ids, "ts_us": pa.array([day + i for i in range(len(ids))], pa.int64()), "source": sources})
    info = segments.build_segment(tmp_path, "s", "m", vectors, meta, {20_000: len(ids)})
    segment = segments.load_segment(tmp_path, info, 8, 20_000)

    assert [segment.ids[row] for row in range(len(ids))] == ids == list(segment.ids)
    assert segment.ids.take(np.array([4, 0, 2])) == [ids[4], ids[0], ids[2]]
    assert segment.sources_of(np.arange(len(ids))) == sources
    assert np.flatnonzero(segment.ids.equal("雪-1")).tolist() == [2]
    assert not segment.ids.equal("nobody").any()
    assert np.flatnonzero(segment.mask("support-bot", None, None)).tolist() == [2, 5]
    # An unknown source matches no row, not the rows without one.
    assert not segment.mask("no-such-source", None, None).any()
    assert segments.meta_table(segment).to_pylist() == meta.to_pylist()


def test_the_hot_index_asset_materializes_with_passing_checks(hot_settings: Settings) -> None:
    import dagster as dg

    from nextesy_assets.defs.hot import hot_index
    from nextesy_assets.defs.resources import NextesyResource

    append_batch(hot_settings, "b1", 300, [0, 1, 9], seed=10)
    result = dg.materialize([hot_index], resources={"nextesy": NextesyResource()})
    assert result.success
    checks_run = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks_run) == {"hot_parity", "hot_recall", "hot_staleness"}
    assert all(e.passed for e in checks_run.values()), checks_run
    assert checks_run["hot_parity"].metadata["index_rows"].value == 200  # day 9 is outside the window
    assert checks_run["hot_recall"].metadata["recall"].value >= 0.95


def test_balancer_evens_out_connections_and_then_closes_none() -> None:
    """Eight keep-alive clients that the kernel split 6 to 2: the busier worker closes connections until
    each holds four, and a balanced server closes nothing more."""
    import multiprocessing
    import random

    from nextesy_assets.lib.hot.service import Balancer

    counts = multiprocessing.RawArray("i", 2)
    workers = [Balancer(counts, 0), Balancer(counts, 1)]
    clients = {("127.0.0.1", 40000 + 2 * i): (0 if i < 6 else 1) for i in range(8)}
    pick = random.Random(5)
    closed = 0
    for _ in range(20):  # rounds of one request per client, each on its connection's worker
        for client, worker in list(clients.items()):
            if workers[worker].shed(client):
                closed += 1
                del clients[client]  # the client reconnects from a new port; the kernel picks a worker
                clients[(client[0], client[1] + 1000)] = pick.randrange(2)
    assert closed >= 2
    assert sorted(len(w.seen) for w in workers) == [4, 4] and list(counts) == [4, 4]
    for client, worker in clients.items():
        assert not workers[worker].shed(client)


def test_a_graph_built_at_once_stores_its_rows_near_their_graph_neighbours(tmp_path: Path) -> None:
    """A segment whose graph is built at once stores its rows in the graph's breadth-first order: each row
    keeps its id, time and vector, the graph is renumbered with them, and linked rows lie nearer each other
    in the file than they did in the order they came."""
    dims, rows = 32, 10_000
    vectors = normalise(structured_vectors(np.random.default_rng(5), rows, dims))
    day = segments.US_PER_DAY * 20_000
    ids = [f"row-{i}" for i in range(rows)]
    meta = pa.table({"id": ids, "ts_us": pa.array([day + i for i in range(rows)], pa.int64()), "source": ["s"] * rows})
    info = segments.build_segment(tmp_path, "s", "m", vectors, meta, {20_000: rows})
    segment = segments.load_segment(tmp_path, info, dims, 20_000)

    assert info.engine == "faiss-hnsw"
    order = np.array([int(i.removeprefix("row-")) for i in segment.ids])
    assert sorted(order.tolist()) == list(range(rows)) and (order != np.arange(rows)).any()
    np.testing.assert_array_equal(segment.vectors, vectors[order])
    assert (segment.ts_us == day + order).all()
    # The graph moved with its rows: each stored vector finds its own position first.
    _, found = segment.index.search(segment.vectors[:300], 1)
    assert (found[:, 0] == np.arange(300)).mean() >= 0.99
    bottom = segment.index.bottom_links()
    node, slot = np.nonzero(bottom >= 0)
    linked = bottom[node, slot]
    now, before = np.abs(node - linked), np.abs(order[node] - order[linked])  # rows apart, now and as they came
    assert (now <= 256).mean() >= 3 * (before <= 256).mean(), ((now <= 256).mean(), (before <= 256).mean())
    assert np.median(now) < 0.6 * np.median(before), (np.median(now), np.median(before))


def test_the_native_walk_answers_as_faiss_walks_the_same_graph_and_follows_it_as_it_grows() -> None:
    """The native walk of FAISS's graph (rust_ext/src/hnsw.rs) finds what FAISS's own search finds, with
    and without a mask; rows added after a walk are walked next time (the arrays it read were replaced)."""
    dims = 48
    data = normalise(structured_vectors(np.random.default_rng(21), 6000, dims))
    queries = normalise(structured_vectors(np.random.default_rng(22), 50, dims))
    index = FaissHnsw(dims)
    index.add(data[:4000])
    assert index._native_walker() is not None
    index.add(data[4000:])
    live = np.ones(len(data), dtype=bool)
    live[::4] = False
    live.flags.writeable = False
    for allowed in (None, live):
        _, truth = exact_search(data, queries, 10, allowed)
        answers = {}
        for walk_natively in (True, False):
            index.native_walk = walk_natively
            answers[walk_natively] = index.search(queries, 10, allowed)[1]
            found = answers[walk_natively]
            recall = np.mean([len(set(t) & set(g)) / 10 for t, g in zip(truth, found, strict=True)])
            assert recall >= 0.97, (walk_natively, allowed is None, recall)
        if allowed is not None:
            assert live[answers[True].ravel()].all()
        same = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(answers[True], answers[False], strict=True)])
        assert same >= 0.95
    # The rows added after the first walk are found: their own vectors come back first.
    index.native_walk = True
    assert index.search(data[4000:4010], 1)[1].ravel().tolist() == list(range(4000, 4010))


def test_rows_are_linked_in_at_the_setting_whatever_a_graph_read_from_disk_was_built_with(tmp_path: Path) -> None:
    """A graph written by an earlier release (built at efConstruction 40) grows at today's setting; FAISS keeps
    the setting in the file, so a loaded graph would otherwise link new rows in at its old one."""
    dims = 16
    data = normalise(structured_vectors(np.random.default_rng(23), 600, dims))
    old = FaissHnsw(dims)
    old.add(data[:400])
    old._index.hnsw.efConstruction = 40  # type: ignore[attr-defined]
    old.save(tmp_path / "old")
    loaded = FaissHnsw.load(tmp_path / "old", dims, huge_pages=False)
    assert loaded._index.hnsw.efConstruction == 40  # type: ignore[attr-defined]
    loaded.add(data[400:])
    assert loaded._index.hnsw.efConstruction == HNSW_EF_CONSTRUCTION  # type: ignore[attr-defined]
    assert FaissHnsw(dims)._index.hnsw.efConstruction == HNSW_EF_CONSTRUCTION  # type: ignore[attr-defined]
    assert loaded.search(data[400:410], 1)[1].ravel().tolist() == list(range(400, 410))


def test_the_native_rerank_scores_exactly_and_names_a_label_past_the_rows() -> None:
    rows = normalise(np.random.default_rng(5).standard_normal((50, 16)).astype(np.float32))
    query = rows[7] + 0.01 * rows[3]
    scores, labels = native.rerank(rows, query, np.array([3, -1, 7, 12, 7]), 3)
    exact = rows[[3, 7, 12]] @ query  # 7 twice is scored once; -1 is padding
    best = np.argsort(-exact, kind="stable")
    assert labels.tolist() == [[3, 7, 12][i] for i in best]
    assert np.allclose(scores, exact[best], atol=1e-6)
    assert native.rerank(rows, query, np.array([-1, -1]), 2)[1].tolist() == [-1, -1]
    with pytest.raises(ValueError, match="candidate label 50 is past the 50 stored rows"):
        native.rerank(rows, query, np.array([1, 50]), 2)


def test_search_effort_narrows_the_graph_walk_down_to_the_rerank_depth() -> None:
    """Search effort scales the graph walk (efSearch x effort: wider over a segment with dead rows), never
    below the re-rank depth, and a narrow walk still answers from the graph."""
    from nextesy_assets.lib.hot.engine import RERANK

    dims, rng = 32, np.random.default_rng(4)
    index = FaissHnsw(dims)
    index.add(normalise(structured_vectors(rng, 3000, dims)))
    query = normalise(structured_vectors(np.random.default_rng(5), 1, dims))
    breadths = spy_on_walks(index)
    full = index.search(query, 10)[1][0]
    narrow = index.search(query, 10, effort=2 / 7)[1][0]
    floor = index.search(query, 10, effort=0.01)[1][0]
    assert breadths == [HNSW_EF_SEARCH, math.ceil(HNSW_EF_SEARCH * 2 / 7), RERANK]
    exact = exact_search(index.vectors, query, 10)[1][0]
    for got in (full, narrow, floor):
        assert len(set(got) & set(exact)) >= 8
