"""The hot window as the update path leaves it and the service searches it: a week in a main graph and a delta.

run.py measures one 1M graph built in one go. In service, a model's window is a main graph built at once
and a delta graph that takes each new batch (`update.next_version`: grown in place, its rows file linked
and appended to, and published; then built again at once when it has doubled). Once the delta holds
--fold-at rows (`NEXTESY_HOT_FOLD_DELTA_ROWS`) it is linked into the main graph in place (`update.fold`),
until the rows linked in since the main graph was built reach a tenth of it (`MERGE_DELTA_AT`) and all are
built at once as one. This measures the end of that cycle, where a query costs most: run.py's 1M graph (its
cache, or built here) as a week of rows, and --grow of its rows more in batches of --batch rows, searched
through `HotIndex.search` (the service's own path, which walks the delta less broadly):

- the full window: 7 days, 1M rows and those linked in in the main graph, the rest in the delta (with
  --no-fold, every added row in the delta, as before folds were made);
- the next day: the oldest day has left the window, its rows masked out of the main graph (recall judged
  against an exact search over the live rows only).

    flock /tmp/nextesy-heavy.lock .venv/bin/python bench/hot/window.py [--size 1000000] [--grow 0.095] \
        [--fold-at 10000 | --no-fold]

The grown index is kept under --cache (with the seconds each batch took); `--rebuild` grows it again.
Results go under "window_7_days_folded" (or "window_7_days" with --no-fold) of the size's entry in
bench/results/hot.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.hot.run import (  # noqa: E402
    DIMS,
    RESULTS,
    Engine,
    K,
    OursHnsw,
    cache_key,
    cached_array,
    exact_truth,
    load1,
    measure,
    publish,
    vectors,
)
from nextesy_assets.lib.hot import segments  # noqa: E402
from nextesy_assets.lib.hot.search import HotIndex  # noqa: E402
from nextesy_assets.lib.hot.update import MERGE_DELTA_AT, Carried, next_version, settle  # noqa: E402
from nextesy_assets.lib.settings import DEFAULT_HOT_FOLD_DELTA_ROWS  # noqa: E402

MODEL = "bench"
DAYS = 7


def meta_of(first_row: int, rows: int, day: int):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    labels = np.arange(first_row, first_row + rows)
    return pa.table(
        {"id": [f"v{i}" for i in labels], "ts_us": day * segments.US_PER_DAY + labels % 1000, "source": [MODEL] * rows}
    )


def grow_window(
    home: Path, data: np.ndarray, extra: np.ndarray, batch: int, cache: Path, fold_at: int
) -> dict[str, object]:
    """Publish the base graph as a week-long segment, then add `extra` batch by batch as update() does,
    the delta linked into the main graph whenever it holds `fold_at` rows."""
    ours = OursHnsw()
    key = cache_key(OursHnsw, len(data))
    started = time.perf_counter()
    if (cache / f"{key}.index").exists():
        ours.load(cache / f"{key}.index", data)
        base_how = f"run.py's cached build ({key})"
    else:
        ours.build(data)
        base_how = f"built at once here in {time.perf_counter() - started:.0f} s"
    # The base's rows spread evenly over the week by position, as run.py publishes an index.
    today = (datetime.now(UTC).date() - segments.EPOCH).days
    first_day = today - (DAYS - 1)
    labels = np.arange(len(data))
    main = publish(ours, data, home, (first_day + labels * DAYS // len(data)) * segments.US_PER_DAY + labels % 1000)
    root = home / "hot"
    seconds, visible, steps, delta, version = [], [], [], None, 1
    for n, start in enumerate(range(0, len(extra), batch)):
        rows = extra[start : start + batch]
        t = time.perf_counter()
        meta = meta_of(len(data) + start, len(rows), today)
        carried = None if delta is None else Carried(delta, delta.days, delta.replaced)
        # As update() does it: the batch into the delta, grown in place, published; then the fold or rebuild due.
        delta = next_version(root, f"delta-{n}", MODEL, carried, rows, meta, first_day, DIMS)
        linked = main.rows - main.built_rows + delta.rows
        assert linked <= MERGE_DELTA_AT * main.built_rows, "--grow goes past the merge: that update rebuilds"
        version += 1
        write_version(root, [main, delta], version, first_day)
        visible.append(round(time.perf_counter() - t, 2))
        how = "new" if carried is None else "grown"
        settled = settle(
            root,
            MODEL,
            n,
            Carried(main, main.days, main.replaced),
            Carried(delta, delta.days, delta.replaced),
            first_day,
            DIMS,
            fold_at,
        )
        if [s.name for s in settled] != [main.name, delta.name]:
            if len(settled) == 1:  # the delta linked into the main graph in place
                (main,), delta = settled, None
                how += ", then linked into the main graph"
            else:  # the delta built again at once: the assert above keeps it from a merge
                main, delta = settled
                how += ", then rebuilt"
            version += 1
            write_version(root, settled, version, first_day)
        segments.sweep(root, {main.name} | ({delta.name} if delta else set()))  # as update() does: 1 GB a graph
        seconds.append(round(time.perf_counter() - t, 2))
        steps.append(how)
        print(
            f"batch {n + 1}: {len(rows)} rows, delta {how}, main {main.rows} and delta {delta.rows if delta else 0} "
            f"rows: searchable after {visible[-1]} s, "
            f"done in {seconds[-1]} s",
            flush=True,
        )
    segments.sweep(root, {main.name, delta.name} if delta else {main.name})
    return {
        "base": base_how,
        "batch_rows": batch,
        "visible_s_per_batch": visible,
        "seconds_per_batch": seconds,
        "delta_per_batch": steps,
        "fold_delta_rows": fold_at,
        "load_1m": load1(),
    }


def write_version(root: Path, infos: list[segments.SegmentInfo], version: int, first_day: int) -> None:
    segments.write_manifest(
        root,
        segments.Manifest(
            version=version,
            source_snapshot_id=version,
            source_snapshot_ms=int(time.time() * 1000),
            window_days=DAYS,
            window_start=first_day,
            dims=DIMS,
            segments=infos,
        ),
    )


class Window(Engine):
    """Queries through HotIndex.search over the built window; labels are the row numbers of `data`."""

    name = "faiss-hnsw-sq8 + re-rank (nextesy), HotIndex.search"
    params: ClassVar[dict[str, object]] = OursHnsw.params
    cacheable = False

    def __init__(self, root: Path) -> None:
        self.root = root

    def build(self, data: np.ndarray) -> None:  # measured as build_s: here, the service's load of the index
        self.index = HotIndex(self.root)

    def query(self, q: np.ndarray) -> np.ndarray:
        return np.asarray([int(h.id[1:]) for h in self.index.search(q, K, MODEL)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--grow", type=float, default=0.095, help="Rows added in place, as a share of --size.")
    parser.add_argument("--batch", type=int, default=6_000, help="Rows per added batch (a day's in 24 hours).")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/nextesy-bench-hot-cache"))
    parser.add_argument("--rebuild", action="store_true", help="Grow the window again instead of reusing it.")
    parser.add_argument(
        "--fold-at",
        type=int,
        default=DEFAULT_HOT_FOLD_DELTA_ROWS,
        help="Link the delta into the main graph once it holds this many rows (NEXTESY_HOT_FOLD_DELTA_ROWS).",
    )
    parser.add_argument("--no-fold", action="store_true", help="Keep every added row in the delta (no fold).")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    data = cached_array(args.cache, f"data-{args.size}", functools.partial(vectors, args.size, 1))
    extra = vectors(int(args.size * args.grow), seed=3)
    queries = vectors(args.queries, seed=2)
    # A NEXTESY_HOME of its own: `bench/hot/http_runs.py <home>` serves the grown window as it is.
    fold_at = len(extra) + 1 if args.no_fold else args.fold_at
    home = args.cache / (f"window-{args.size}-grown-{args.grow}" + ("" if args.no_fold else f"-fold-{fold_at}"))
    root, stamp = home / "hot", home / "grown.json"
    if args.rebuild or not stamp.exists() or segments.read_manifest(root) is None:
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        stamp.write_text(json.dumps(grow_window(home, data, extra, args.batch, args.cache, fold_at)))
    grown = json.loads(stamp.read_text())
    manifest = segments.read_manifest(root)
    assert manifest is not None
    info = manifest.segments[0]  # the main graph; the delta holds only today
    first_day = manifest.window_start
    out: dict[str, object] = {"grown_by": f"{len(extra)} rows in place ({args.grow} of {args.size})", **grown}

    everything = np.concatenate([data, extra])
    truth = cached_array(
        args.cache, f"truth-{len(everything)}-{args.queries}", functools.partial(exact_truth, everything, queries)
    )
    # build_s of these two is the time HotIndex takes to load the index (as the service does at start).
    full = measure(Window(root), everything, queries, truth, args.queries, None)
    out["full_window"] = full
    print(json.dumps(full), flush=True)

    # The next day: the oldest day is out of the window, its rows masked (no files change, as in update()).
    evicted = int(info.days[first_day])
    moved = replace(manifest, version=manifest.version + 1, window_start=first_day + 1)
    moved.segments = [
        replace(info, days={d: r for d, r in info.days.items() if d != first_day}),
        *manifest.segments[1:],
    ]
    segments.write_manifest(root, moved)
    live_truth = cached_array(
        args.cache,
        f"truth-{len(everything)}-{args.queries}-from-{evicted}",
        lambda: exact_truth(everything[evicted:], queries) + evicted,
    )
    masked = measure(Window(root), everything, queries, live_truth, args.queries, None)
    masked["dead_rows"] = evicted
    out["oldest_day_masked"] = masked
    print(json.dumps(masked), flush=True)
    segments.write_manifest(root, replace(manifest, version=manifest.version + 2))  # as grown, for the next run
    out["load_1m_after"] = load1()

    results = json.loads(RESULTS.read_text())
    key = "window_7_days" if args.no_fold else "window_7_days_folded"
    results["sizes"].setdefault(str(args.size), {})[key] = out
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
