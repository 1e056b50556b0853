"""The graph walk itself: FAISS's HNSW search against the native walk (rust_ext/src/hnsw.rs) of the same
graph, alternating in one process, at a few efSearch breadths, through the engine's own search (walk on the
codes, float32 re-rank), with and without a filter bitmap.

    flock /tmp/nextesy-heavy.lock .venv/bin/python bench/hot/walk.py /tmp/nextesy-bench-XXXX/home/hot \
        [--ef 72,88] [--rounds 3] [--label NAME]

Per pass over the held-out queries (run.py's, recall against an exact search): the querying thread's
CPU per query (mean, p50, p99) and recall@10. The same graph, the same codes, the same re-rank: only the
walk differs. With --label the passes go under "native_walk" of the size's entry in
bench/results/hot.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.hot.run import K, exact_among, load1, published_segment, recall, record, vectors  # noqa: E402


def passes(index, queries: np.ndarray, allowed: np.ndarray | None) -> tuple[list[float], np.ndarray]:  # type: ignore[no-untyped-def]
    cpu, answers = [], []
    for q in queries[:20]:
        index.search(q.reshape(1, -1), K, allowed)
    for q in queries:
        c = time.thread_time()
        answers.append(index.search(q.reshape(1, -1), K, allowed)[1][0])
        cpu.append(time.thread_time() - c)
    return cpu, np.asarray(answers)


def measured_pass(index, queries: np.ndarray, allowed: np.ndarray | None, truth: np.ndarray) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """One of `passes`, summed up: the thread's CPU per query (mean, p50, p99), recall@10 against `truth`, and
    the 1-minute load average before and after."""
    load = load1()
    cpu, answers = passes(index, queries, allowed)
    ms = np.asarray(cpu) * 1000
    return {
        "cpu_mean_ms": round(float(ms.mean()), 3),
        "cpu_p50_ms": round(float(np.percentile(ms, 50)), 3),
        "cpu_p99_ms": round(float(np.percentile(ms, 99)), 3),
        "recall_at_10": round(recall(truth, answers), 4),
        "load_1m": [load, load1()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hot", type=Path, help="The published index's hot directory (its manifest.json).")
    parser.add_argument("--ef", default="72,88")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--filter", action="store_true", help="Also with a mask keeping two rows in three.")
    parser.add_argument("--label", help="Record the passes in bench/results/hot.json under this name.")
    args = parser.parse_args()
    import faiss

    segment = published_segment(args.hot)
    data, index = segment.vectors, segment.index
    queries = vectors(args.queries, seed=2)  # the same queries run.py used
    masks: dict[str, np.ndarray | None] = {"none": None}
    if args.filter:
        keep = np.ones(len(data), dtype=bool)
        keep[::3] = False
        keep.flags.writeable = False  # as a segment's live rows: its bitmap made once
        masks["two_in_three"] = keep
    truths = {name: exact_among(data, queries, None if m is None else np.flatnonzero(m)) for name, m in masks.items()}
    faiss.omp_set_num_threads(1)
    runs = []
    for round_ in range(args.rounds):
        for ef in (int(e) for e in args.ef.split(",")):
            for name, mask in masks.items():
                for walk in ("faiss", "native"):
                    index.ef_search = ef
                    index.native_walk = walk == "native"
                    row = {
                        "round": round_ + 1,
                        "walk": walk,
                        "ef_search": ef,
                        "filter": name,
                        **measured_pass(index, queries, mask, truths[name]),
                    }
                    print(json.dumps(row), flush=True)
                    runs.append(row)
    if args.label:
        record(len(data), "native_walk", args.label, {"rows": len(data), "queries": len(queries), "runs": runs})


if __name__ == "__main__":
    main()
