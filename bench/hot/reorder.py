"""Does the walk get cheaper when a graph's nodes are stored near their neighbours? The same graph in its
build order and renumbered, walked in alternating passes.

    flock /tmp/nextesy-heavy.lock .venv/bin/python bench/hot/reorder.py /tmp/nextesy-bench-hot-XXXX/home \
        [--orders kmeans,bfs] [--rounds 8] [--queries 1000] [--label NAME]

A query scores a few thousand nodes of the 1M graph, each a 768-byte code read from wherever its row
landed, and the walk is bound by those reads (`memory.py`). A node's neighbours are near it in vector
space, so an order that keeps near vectors together in memory makes a walk's reads land closer together.
Orders tried (FAISS's `permute_entries` renumbers the graph's codes and links; the float32 rows are
permuted to match, so the walk and the re-rank are the service's own):

- `kmeans`: rows sorted by their nearest of 4,096 spherical k-means centroids (trained on 160k rows);
- `bfs`: breadth-first from the graph's entry point over the bottom layer's links
  (`FaissHnsw.locality_order`, the order a segment's graph built at once is now stored in).

For each order: its cost to compute, recall@10 of both (the same answers, mapped back to rows), and CPU
per query on one thread in `--rounds` alternating passes over run.py's held-out queries. With --label the
result is recorded under "reorder" of the size's entry in bench/results/hot.json.
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

from bench.hot.run import DIMS, K, exact_truth, load1, published_segment, recall, record, vectors  # noqa: E402
from nextesy_assets.lib.hot import engine  # noqa: E402


def kmeans_order(data: np.ndarray) -> np.ndarray:
    import faiss

    sample = data[np.sort(np.random.default_rng(0).choice(len(data), min(len(data), 160_000), replace=False))]
    km = faiss.Kmeans(data.shape[1], 4096, niter=8, seed=1, spherical=True)
    km.train(sample)
    _, nearest = km.index.search(data, 1)
    return np.argsort(nearest[:, 0], kind="stable").astype(np.int64)


def cpu_per_query(index: engine.FaissHnsw, queries: np.ndarray) -> float:
    started = time.thread_time()
    for q in queries:
        index.search(q.reshape(1, -1), K)
    return round((time.thread_time() - started) / len(queries) * 1e3, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("home", type=Path)
    parser.add_argument("--orders", default="kmeans,bfs")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--label", help="Record the result under this name in hot.json.")
    args = parser.parse_args()
    import faiss

    segment = published_segment(args.home / "hot")
    path = args.home / "hot" / "segments" / segment.info.name / engine.FaissHnsw.FILE
    # run.py stores row i of its data as "v{i}", in whatever order it publishes: the baseline is the graph
    # and rows put back in the order they were built in.
    as_built = np.argsort([int(i[1:]) for i in segment.ids]).astype(np.int64)
    data = np.ascontiguousarray(segment.vectors[as_built])
    queries = vectors(args.queries, seed=2)
    truth = exact_truth(data, queries)
    faiss.omp_set_num_threads(1)

    def load(order: np.ndarray) -> object:
        """The stored graph with entry i its stored entry `order[i]`, on huge pages as the service has it."""
        index = faiss.read_index(str(path))
        index.permute_entries(order)
        engine.prefer_huge_pages(index)
        return index

    built = engine.FaissHnsw(DIMS, load(as_built), data)
    found: dict[str, object] = {"rows": len(data), "queries": len(queries)}
    for name in args.orders.split(","):
        faiss.omp_set_num_threads(2)
        started = time.perf_counter()
        perm = kmeans_order(data) if name == "kmeans" else built.locality_order()
        order_s = round(time.perf_counter() - started, 1)
        faiss.omp_set_num_threads(1)
        renumbered_graph = load(as_built[perm])  # entry i is entry perm[i] of the graph as built
        renumbered = engine.FaissHnsw(DIMS, renumbered_graph, np.ascontiguousarray(data[perm]))
        answers = {
            "built": np.asarray([built.search(q.reshape(1, -1), K)[1][0] for q in queries]),
            name: perm[np.asarray([renumbered.search(q.reshape(1, -1), K)[1][0] for q in queries])],
        }
        passes: dict[str, list[float]] = {"built": [], name: []}
        for _ in range(args.rounds):
            passes["built"].append(cpu_per_query(built, queries))
            passes[name].append(cpu_per_query(renumbered, queries))
        ratios = [round(b / a, 3) for a, b in zip(passes["built"], passes[name], strict=True)]
        found[name] = {
            "order_s": order_s,
            "recall_at_10": {k: round(recall(truth, v), 4) for k, v in answers.items()},
            "same_answers": float(np.mean(answers["built"] == answers[name])),
            "cpu_ms_per_query": passes,
            "ratio": ratios,
            "load_1m": load1(),
        }
        print(name, json.dumps(found[name]), flush=True)
        del renumbered, renumbered_graph
    if args.label:
        record(len(data), "reorder", args.label, found)


if __name__ == "__main__":
    main()
