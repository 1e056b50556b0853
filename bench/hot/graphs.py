"""Two graphs of the same rows, built with different settings (efConstruction, say), walked the same way and
alternating in one process: which reaches a recall for less CPU per query.

    # two published indexes of run.py's 1M rows, e.g. built at efConstruction 40 and 80
    flock /tmp/nextesy-heavy.lock .venv/bin/python bench/hot/graphs.py HOT_A HOT_B \
        [--ef 56,64,72,88] [--rounds 3] [--label NAME]

HOT_A and HOT_B are hot directories (their manifest.json) that run.py's `publish` wrote from the same rows.
Per round, graph and efSearch, over run.py's 1,000 held-out queries (20 more first, to warm up): the
querying thread's CPU per query (mean, p50, p99) through the engine's own search (native walk on the codes,
float32 re-rank), recall@10 against an exact search, and the nodes the walk scored per query (FAISS's
counters, from one FAISS walk of the same graph at the same breadth: the work a query does, whatever the
machine's load). With --label the rounds go under "graphs" of the size's entry in bench/results/hot.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.hot.run import K, exact_among, published_segment, record, vectors  # noqa: E402
from bench.hot.walk import measured_pass  # noqa: E402


def nodes_scored(index, queries: np.ndarray, ef: int) -> float:  # type: ignore[no-untyped-def]
    """Mean nodes a query scores at efSearch `ef`, counted by FAISS on its walk of the graph through the
    engine's own search (its breadth, as memory.py counts them); the native walk scores the same nodes."""
    import faiss

    index.ef_search, index.native_walk = ef, False
    faiss.cvar.hnsw_stats.reset()
    try:
        index.search(queries, K)
    finally:
        index.native_walk = True
    return round(faiss.cvar.hnsw_stats.ndis / len(queries), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="One published index's hot directory.")
    parser.add_argument("b", type=Path, help="The other's, of the same rows.")
    parser.add_argument("--ef", default="56,64,72,88")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--label", help="Record the rounds in bench/results/hot.json under this name.")
    args = parser.parse_args()
    import faiss

    segments = {"a": published_segment(args.a), "b": published_segment(args.b)}
    rows = {name: segment.vectors for name, segment in segments.items()}
    if rows["a"].shape != rows["b"].shape or not np.array_equal(rows["a"][::997], rows["b"][::997]):
        sys.exit(f"{args.a} and {args.b} do not hold the same rows")
    queries = vectors(args.queries, seed=2)  # the same queries run.py used
    truth = exact_among(rows["a"], queries)
    faiss.omp_set_num_threads(1)
    efs = [int(e) for e in args.ef.split(",")]
    nodes = {(name, ef): nodes_scored(s.index, queries, ef) for name, s in segments.items() for ef in efs}
    runs = []
    for round_ in range(args.rounds):
        for ef in efs:
            for name, segment in segments.items():
                index = segment.index
                index.ef_search = ef
                row = {
                    "round": round_ + 1,
                    "graph": name,
                    "ef_search": ef,
                    "nodes_scored": nodes[name, ef],
                    **measured_pass(index, queries, None, truth),
                }
                print(json.dumps(row), flush=True)
                runs.append(row)
    if args.label:
        value = {"a": str(args.a), "b": str(args.b), "runs": runs}
        record(len(rows["a"]), "graphs", args.label, value)


if __name__ == "__main__":
    main()
