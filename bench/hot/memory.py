"""What a hot-tier query costs this machine in memory reads, beside the rate the machine serves them.

    flock /tmp/nextesy-heavy.lock .venv/bin/python bench/hot/memory.py [--size 1000000] [--repeat 3]

A query walks the HNSW graph through a few thousand nodes scattered over the whole index and scores each
node's 768-byte code, so its cost is set by how fast the machine serves random cache lines, not by the
arithmetic. This measures, in one run:

1. the machine: random rows of 64, 768 and 3,072 bytes gathered from a 1 GiB array (2 MiB pages, as the
   service maps its index), by one process and then by two processes at once (the service's two
   workers), and a sequential read of the same array;
2. our walk: the nodes it scores and the hops it takes per query (FAISS's own counters), on run.py's
   cached graph at the shipped settings, one thread, 1,000 held-out queries, and the bytes that makes
   per query (codes, link lists, and the re-ranked float32 rows);
3. the two together: the read rate the walk reaches, against the machine's random-row rate.

Needs run.py's cached build of the size (`run.py --sizes N --engines faiss-hnsw` makes it). Results go to
"memory" of the size's entry in bench/results/hot.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.hot.run import DIMS, RESULTS, OursHnsw, cache_key, load1, vectors  # noqa: E402
from nextesy_assets.lib.hot import engine  # noqa: E402

ARRAY_BYTES = 1 << 30
ROW_BYTES = (64, 768, 3072)  # a cache line; an 8-bit code of 768 dims; a float32 row of 768 dims
GATHERS = 100_000


def gather_rates(start: multiprocessing.synchronize.Barrier | None = None) -> dict[str, float]:  # type: ignore[name-defined]
    """ns per row and GB/s for random rows of each size, and GB/s for a sequential pass; with `start`, each
    step begins when every process sharing the barrier is ready for it, so the processes' steps overlap."""
    import mmap

    region = mmap.mmap(-1, ARRAY_BYTES)
    flat = np.frombuffer(region, dtype=np.uint8)
    engine._madvise(flat.ctypes.data, ARRAY_BYTES, engine._MADV_HUGEPAGE)
    flat[:] = np.random.default_rng(0).integers(0, 255, ARRAY_BYTES, dtype=np.uint8)
    out: dict[str, float] = {}
    rng = np.random.default_rng(1)
    for width in ROW_BYTES:
        rows = flat[: ARRAY_BYTES // width * width].reshape(-1, width)
        ids = rng.integers(0, len(rows), GATHERS)
        into = np.ones((GATHERS, width), dtype=np.uint8)
        np.take(rows, ids[:1000], axis=0, out=into[:1000])
        if start is not None:
            start.wait()
        began = time.perf_counter()
        np.take(rows, ids, axis=0, out=into)
        seconds = time.perf_counter() - began
        out[f"random_{width}B_ns_per_row"] = round(seconds / GATHERS * 1e9, 1)
        out[f"random_{width}B_gb_s"] = round(GATHERS * width / seconds / 1e9, 2)
    if start is not None:
        start.wait()
    began = time.perf_counter()
    flat.reshape(-1, 4096).sum(axis=0, dtype=np.uint64)
    out["sequential_gb_s"] = round(ARRAY_BYTES / (time.perf_counter() - began) / 1e9, 2)
    return out


def _worker(start: object, results: object) -> None:
    results.put(gather_rates(start))  # type: ignore[attr-defined]


def machine(repeat: int) -> dict[str, object]:
    one = [gather_rates() for _ in range(repeat)]
    two = []
    for _ in range(repeat):
        start, results = multiprocessing.Barrier(2), multiprocessing.Queue()
        workers = [multiprocessing.Process(target=_worker, args=(start, results)) for _ in range(2)]
        for w in workers:
            w.start()
        pair = [results.get() for _ in workers]
        for w in workers:
            w.join()
        # Each of the two processes' own rate; the machine served the sum of them.
        two.append({key: round(sum(p[key] for p in pair), 2) for key in pair[0] if key.endswith("gb_s")})
    best = {key: max(r[key] for r in one) if key.endswith("gb_s") else min(r[key] for r in one) for key in one[0]}
    return {"one_process_best": best, "two_processes_sum_best": {k: max(r[k] for r in two) for k in two[0]}}


def cached_graph(size: int, cache: Path) -> tuple[str, Path]:
    """The key and file of run.py's cached build of our engine at `size`."""
    key = cache_key(OursHnsw, size)
    stored = cache / f"{key}.index"
    if not stored.exists():
        raise SystemExit(f"no cached graph {stored}: run bench/hot/run.py --sizes {size} --engines faiss-hnsw first")
    return key, stored


def walk(size: int, cache: Path, queries: np.ndarray) -> dict[str, object]:
    import faiss

    adapter = OursHnsw()
    key, stored = cached_graph(size, cache)
    data = np.load(cache / f"data-{size}.npy", mmap_mode="r")
    adapter.load(stored, data)
    engine.populate(data)
    faiss.omp_set_num_threads(1)
    for q in queries[:50]:
        adapter.query(q)
    # The nodes and hops are FAISS's counters, so they are counted on FAISS's walk of the graph; the time is
    # the service's walk (the native one, which scores the same nodes to within a few: the same recall).
    adapter.index.native_walk = False  # type: ignore[attr-defined]
    faiss.cvar.hnsw_stats.reset()
    for q in queries:
        adapter.query(q)
    stats = faiss.cvar.hnsw_stats
    scored, hops = stats.ndis / len(queries), stats.nhops / len(queries)
    adapter.index.native_walk = True  # type: ignore[attr-defined]
    began = time.perf_counter()
    for q in queries:
        adapter.query(q)
    seconds = (time.perf_counter() - began) / len(queries)
    index = adapter.index._index  # type: ignore[attr-defined]
    link_bytes = int(faiss.vector_to_array(index.hnsw.cum_nneighbor_per_level)[1]) * 4
    read = {
        "codes": scored * faiss.downcast_index(index.storage).code_size,
        "links": hops * link_bytes,
        "reranked_rows": engine.RERANK * DIMS * 4,
    }
    total = sum(read.values())
    return {
        "index": key,
        "nodes_scored_per_query": round(scored, 1),
        "hops_per_query": round(hops, 1),
        "kb_read_per_query": {name: round(v / 1024, 1) for name, v in read.items()},
        "mb_read_per_query": round(total / 2**20, 2),
        "ms_per_query_one_thread": round(seconds * 1e3, 3),
        "read_rate_gb_s": round(total / seconds / 1e9, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/nextesy-bench-hot-cache"))
    args = parser.parse_args()
    cached_graph(args.size, args.cache)  # before the machine's part, which takes half a minute
    load_before = load1()
    out: dict[str, object] = {
        "machine": machine(args.repeat),
        "walk": walk(args.size, args.cache, vectors(1000, seed=2)),
    }
    m, w = out["machine"], out["walk"]
    # How much of the machine's random-read rate for code-sized rows the walk reaches on its own.
    out["walk_share_of_random_768B_rate"] = round(w["read_rate_gb_s"] / m["one_process_best"]["random_768B_gb_s"], 2)  # type: ignore[index]
    out["load_1m"] = [load_before, load1()]
    print(json.dumps(out, indent=2))
    results = json.loads(RESULTS.read_text())
    results["sizes"].setdefault(str(args.size), {})["memory"] = out
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
