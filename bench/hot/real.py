"""Real sentence embeddings against the bench's structured vectors: the hot tier's engine and its peers on both.

    .venv/bin/pip install -e '.[bench]'
    flock /tmp/nextesy-heavy.lock .venv/bin/python bench/hot/real.py [--rows 100000] [--queries 1000]

run.py measures at 768-d on structured vectors (a low-rank mixture, like the demo's); recall depends on the
geometry of the data, so this run takes real ones: all-MiniLM-L6-v2 embeddings (384-d) of botocore's API
documentation sentences (bench/hot/minilm.py; embedding 101k of them takes about 10 min on 2 cores, cached
under --cache), and structured vectors of the same count and width beside them. For each dataset, in one
run: every engine as run.py measures it (build, single-query p50/p99, recall@10 against FAISS flat, memory),
then each approximate engine swept over its search breadth (our efSearch, hnswlib's ef, usearch's
expansion_search) for recall@10 and latency. Builds are cached per dataset. Writes "real_embeddings" in
bench/results/hot.json and prints a table.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.hot import minilm  # noqa: E402
from bench.hot.run import (  # noqa: E402
    ENGINES,
    RESULTS,
    Engine,
    Hnswlib,
    OursHnsw,
    Usearch,
    cached_array,
    exact_truth,
    load1,
    measure,
    percentiles,
    recall,
    vectors,
)

BREADTHS = (16, 32, 48, 64, 88, 128, 192)
# FAISS flat answers every query exactly: a few hundred give its latency.
EXACT_QUERIES = 200


def set_breadth(adapter: Engine, breadth: int) -> None:
    """Set an approximate engine's search breadth (the candidate list a query keeps while it walks)."""
    if isinstance(adapter, OursHnsw):
        adapter.index.ef_search = breadth
    elif isinstance(adapter, Hnswlib):
        adapter.index.set_ef(breadth)
    elif isinstance(adapter, Usearch):
        adapter.index.expansion_search = breadth


def default_breadth(adapter: Engine) -> int:
    p = adapter.params
    return int(p.get("efSearch") or p.get("ef") or p["expansion_search"])  # type: ignore[call-overload]


def sweep(adapter: Engine, queries: np.ndarray, truth: np.ndarray) -> list[dict[str, object]]:
    """Recall@10 and single-query latency at each breadth, one thread, as run.measure queries."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    points = []
    try:
        for breadth in BREADTHS:
            set_breadth(adapter, breadth)
            for q in queries[:50]:  # warm-up
                adapter.query(q)
            latencies, answers = [], []
            for q in queries:
                started = time.perf_counter()
                answers.append(adapter.query(q))
                latencies.append(time.perf_counter() - started)
            points.append(
                {
                    "breadth": breadth,
                    **percentiles(latencies),
                    "recall_at_10": round(recall(truth, np.asarray(answers)), 4),
                }
            )
    finally:
        set_breadth(adapter, default_breadth(adapter))
        faiss.omp_set_num_threads(threads)
    return points


def dataset(name: str, rows: int, queries: int, cache: Path) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    if name == "minilm":
        return minilm.embeddings(rows, queries, cache)
    data = cached_array(cache, f"data-{rows}-{minilm.DIMS}", functools.partial(vectors, rows, 1, minilm.DIMS))
    about = {"text": "nextesy_assets.lib.demo.structured_vectors (bench/hot/run.py's data)", "dims": minilm.DIMS}
    return data, vectors(queries, 2, minilm.DIMS), about


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--datasets", default="minilm,structured")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/nextesy-bench-hot-cache"))
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)

    found: dict[str, object] = {}
    for name in args.datasets.split(","):
        print(f"--- {name}: {args.rows:,} rows", flush=True)
        data, queries, about = dataset(name, args.rows, args.queries, args.cache)
        builds = args.cache / f"real-{name}-{args.rows}"  # a dataset's builds apart from run.py's
        builds.mkdir(parents=True, exist_ok=True)
        truth = cached_array(builds, f"truth-{args.queries}", functools.partial(exact_truth, data, queries))
        entry: dict[str, object] = {**about, "rows": len(data), "queries": len(queries), "engines": []}
        for key in args.engines.split(","):
            adapter = ENGINES[key]()
            runs = EXACT_QUERIES if key == "faiss-flat" else len(queries)
            print(f"{key}: building", flush=True)
            measured = measure(adapter, data, queries, truth, runs, builds)
            if key != "faiss-flat":
                measured["sweep"] = sweep(adapter, queries, truth)
            print(json.dumps(measured), flush=True)
            entry["engines"].append(measured)  # type: ignore[union-attr]
            del adapter
            gc.collect()
        found[name] = entry
        del data
        gc.collect()

    results = json.loads(RESULTS.read_text())
    results.setdefault("real_embeddings", {})[str(args.rows)] = {**found, "load_1m_after": load1()}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    print(
        f"\n{'data':<11} {'engine':<36} {'build s':>8} {'p50 ms':>7} {'p99 ms':>7} {'recall':>7}",
        " sweep (breadth: recall)",
    )
    for name, entry in found.items():
        for e in entry["engines"]:  # type: ignore[index]
            curve = " ".join(f"{p['breadth']}:{p['recall_at_10']}" for p in e.get("sweep", []))
            print(
                f"{name:<11} {e['engine']:<36} {e['build_s']:>8} {e['p50_ms']:>7} {e['p99_ms']:>7} "
                f"{e['recall_at_10']:>7}  {curve}"
            )
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
