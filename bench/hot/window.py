"""The hot window as the service holds it: one graph per day, every graph walked per query.

run.py measures one 1M segment. A window of D days of the same 1M vectors is D segments (one per
`day(ts)`), and a query walks all of them, each less broadly the more there are, and keeps the best k
(as `HotIndex.search` does). This measures that case in process, on run.py's data, queries and exact
answers (`--ef N` walks every graph at efSearch N instead):

    flock /tmp/nextesy-heavy.lock .venv/bin/python bench/hot/window.py [--days 7] [--size 1000000]

Graphs are cached under --cache like run.py's. Results go under "window_<D>_days" of the size's entry
in bench/results/hot.json.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.hot.run import (  # noqa: E402
    DIMS,
    RESULTS,
    K,
    OursHnsw,
    cached_array,
    exact_truth,
    load1,
    measure,
    vectors,
)
from nextesy_assets.lib.hot import engine  # noqa: E402
from nextesy_assets.lib.hot.search import SEGMENTS_AT_FULL_EFFORT  # noqa: E402


class OursWindow(OursHnsw):
    """Our engine over `days` equal slices of the data, one graph each, answers merged by score."""

    days = 7
    ef: int | None = None
    params: ClassVar[dict[str, object]] = {**OursHnsw.params, "days": days}

    def _parts(self, data: np.ndarray) -> list[tuple[int, np.ndarray]]:
        bounds = np.linspace(0, len(data), self.days + 1).astype(int)
        return [(int(a), data[a:b]) for a, b in itertools.pairwise(bounds)]

    def build(self, data: np.ndarray) -> None:
        self.graphs = []
        for offset, part in self._parts(data):
            index = engine.FaissHnsw(DIMS)
            index.add(part)
            engine.prefer_huge_pages(index._index)
            self.graphs.append((offset, index))

    def query(self, q: np.ndarray) -> np.ndarray:
        effort = min(1.0, SEGMENTS_AT_FULL_EFFORT / len(self.graphs))  # as HotIndex.search walks them
        if self.ef:
            effort = 1.0
            for _, index in self.graphs:
                index.ef_search = self.ef
        q = q.reshape(1, -1)
        scores, labels = [], []
        for offset, index in self.graphs:
            s, lab = index.search(q, K, effort=effort)
            keep = lab[0] >= 0
            scores.append(s[0][keep])
            labels.append(lab[0][keep] + offset)
        merged_scores, merged = np.concatenate(scores), np.concatenate(labels)
        return merged[np.argsort(-merged_scores, kind="stable")[:K]]

    def save(self, path: Path) -> None:
        import faiss

        path.write_text(json.dumps([offset for offset, _ in self.graphs]))
        for n, (_, index) in enumerate(self.graphs):
            faiss.write_index(index._index, f"{path}.{n}")

    def load(self, path: Path, data: np.ndarray) -> None:
        import faiss

        self.graphs = []
        for n, (offset, part) in enumerate(self._parts(data)):
            index = faiss.read_index(f"{path}.{n}")
            engine.prefer_huge_pages(index)
            self.graphs.append((offset, engine.FaissHnsw(DIMS, index, part)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--ef", type=int, help="efSearch of each day's graph (default: the engine's).")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/nextesy-bench-hot-cache"))
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    OursWindow.days = args.days
    OursWindow.params = {**OursHnsw.params, "days": args.days}
    data = cached_array(args.cache, f"data-{args.size}", functools.partial(vectors, args.size, 1))
    queries = vectors(args.queries, seed=2)
    truth = cached_array(args.cache, f"truth-{args.size}-{args.queries}", functools.partial(exact_truth, data, queries))
    adapter = OursWindow()
    adapter.name = f"{OursHnsw.name}, {args.days} day segments"
    if args.ef:
        OursWindow.ef = args.ef
        adapter.name += f", efSearch {args.ef} per segment"
    measured = measure(adapter, data, queries, truth, args.queries, args.cache)
    measured["load_1m_after"] = load1()
    print(json.dumps(measured))
    results = json.loads(RESULTS.read_text())
    key = f"window_{args.days}_days" + (f"_ef{args.ef}" if args.ef else "")
    results["sizes"].setdefault(str(args.size), {})[key] = measured
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
