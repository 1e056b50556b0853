"""efSearch sweep on an index bench/hot/run.py published: recall@10 and single-query latency per ef,
through the engine's own search (graph walk on the codes, float32 re-rank).

    .venv/bin/python bench/hot/ef_sweep.py /tmp/nextesy-bench-hot-XXXX/home/hot [--ef 64,96,128,192]

Adds the sweep under "ef_sweep" of the size's entry in bench/results/hot.json.
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

from bench.hot.run import RESULTS, K, load1, percentiles, published_segment, recall, vectors  # noqa: E402
from nextesy_assets.lib.hot.engine import RERANK  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hot", type=Path, help="The published index's hot directory (its manifest.json).")
    parser.add_argument("--ef", default="64,96,128,192")
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    import faiss

    segment = published_segment(args.hot)
    data, index = segment.vectors, segment.index
    queries = vectors(args.queries, seed=2)  # the same queries run.py used
    flat = faiss.IndexFlatIP(data.shape[1])
    for start in range(0, len(data), 100_000):
        flat.add(np.ascontiguousarray(data[start : start + 100_000]))
    truth = flat.search(queries, K)[1]
    del flat
    faiss.omp_set_num_threads(1)
    sweep = []
    for ef in (int(e) for e in args.ef.split(",")):
        index.ef_search = ef
        for q in queries[:20]:
            index.search(q.reshape(1, -1), K)
        latencies, answers = [], []
        for q in queries:
            t = time.perf_counter()
            answers.append(index.search(q.reshape(1, -1), K)[1][0])
            latencies.append(time.perf_counter() - t)
        row = {
            "ef_search": ef,
            "rerank": RERANK,
            "load_1m": load1(),
            **percentiles(latencies),
            "qps_one_thread": round(len(latencies) / sum(latencies), 1),
            "recall_at_10": round(recall(truth, np.asarray(answers)), 4),
        }
        print(json.dumps(row), flush=True)
        sweep.append(row)
    results = json.loads(RESULTS.read_text())
    results["sizes"].setdefault(str(len(data)), {})["ef_sweep"] = sweep
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
