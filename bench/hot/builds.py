"""Two builds of the native module walking the same graph, alternating in one process: a change to
rust_ext/src/hnsw.rs measured against the build before it, with nothing else different.

    cp nextesy_assets/_native.cpython-311-x86_64-linux-gnu.so /tmp/before.so    # before the change
    (cd rust_ext && cargo build --release && cp target/release/lib_native.so /tmp/after.so)
    flock /tmp/nextesy-heavy.lock .venv/bin/python bench/hot/builds.py /tmp/nextesy-bench-XXXX/home/hot \
        /tmp/before.so /tmp/after.so [--rounds 5] [--ef 88] [--label NAME]

Per round and build: the querying thread's CPU per walk (mean over run.py's 1,000 held-out queries, after
20 to warm up) and recall@10 of the walk's own top 10 against an exact search (no re-rank: a change in
what the walk finds shows here). With --label the rounds go under "native_walk" of the size's entry in
bench/results/hot.json as "builds_<NAME>".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.hot.run import K, exact_among, load1, published_segment, recall, record, vectors  # noqa: E402


def load_build(path: Path, into: Path):  # type: ignore[no-untyped-def]
    """The native module built at `path`, imported from a copy of its own (one name, two files)."""
    into.mkdir(parents=True, exist_ok=True)
    copy = into / "_native.cpython-311-x86_64-linux-gnu.so"
    shutil.copy(path, copy)
    spec = importlib.util.spec_from_file_location("_native", copy)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hot", type=Path, help="The published index's hot directory (its manifest.json).")
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ef", type=int, default=88)
    parser.add_argument("--label")
    args = parser.parse_args()
    import faiss

    from nextesy_assets import native

    segment = published_segment(args.hot)
    data, graph = segment.vectors, segment.index._index  # type: ignore[attr-defined]
    queries = vectors(1000, seed=2)  # run.py's held-out queries
    truth = exact_among(data, queries)
    walkers = {}
    with tempfile.TemporaryDirectory() as scratch:
        loaded = native._native
        try:
            for name, path in (("before", args.before), ("after", args.after)):
                native._native = load_build(path, Path(scratch) / name)
                walkers[name] = native.sq8_graph(graph)
        finally:
            native._native = loaded
    faiss.omp_set_num_threads(1)
    runs = []
    for round_ in range(args.rounds):
        for name, walker in walkers.items():
            for q in queries[:20]:
                walker.search(q, args.ef, K)
            load = load1()
            started = time.thread_time()
            found = np.asarray([walker.search(q, args.ef, K) for q in queries])
            cpu_us = (time.thread_time() - started) / len(queries) * 1e6
            row = {
                "round": round_ + 1,
                "build": name,
                "ef_search": args.ef,
                "cpu_mean_us": round(cpu_us, 1),
                "walk_recall_at_10": round(recall(truth, found), 4),
                "load_1m": [load, load1()],
            }
            print(json.dumps(row), flush=True)
            runs.append(row)
    if args.label:
        value = {"before": str(args.before), "after": str(args.after), "runs": runs}
        record(len(data), "native_walk", f"builds_{args.label}", value)


if __name__ == "__main__":
    main()
