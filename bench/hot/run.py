"""Hot-tier benchmark: our engine (FAISS HNSW over 8-bit codes, float32 re-rank) against FAISS flat
(exact), and hnswlib and usearch at their defaults and at our graph's settings, in process; then the
same index through `nextesy serve` over HTTP on 127.0.0.1.

For each size (default 100k and 1M x 768 normalised structured vectors, like the demo's): build time,
single-query p50/p99 latency and QPS for k=10, recall@10 against exact search, memory; the time to add
a 10k-vector batch to the index (as the update path adds it) while a thread keeps querying; and HTTP
p50/p99 under N concurrent clients (wrk, keep-alive connections; and Python client processes).

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/hot/run.py [--sizes 100000,1000000] [--engines faiss-hnsw,faiss-flat,hnswlib,...]

Built indexes are kept under --cache (default /tmp/nextesy-bench-hot-cache) with their build time, so a
rerun measures search without rebuilding (the JSON marks a reused build "cached": true). Writes
bench/results/hot.json (merged with earlier sizes) and prints a short table. The 1-minute load average
is recorded around every measurement: on a shared 2-core machine, tail latencies are only comparable
between runs with similar load. 1M x 768 needs about 12 GB of memory and, on 2 cores, 10-25 minutes of
graph building per library.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import multiprocessing
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nextesy_assets.lib.demo import structured_vectors  # noqa: E402
from nextesy_assets.lib.hot import engine  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "hot.json"
K = 10
DIMS = 768
CHUNK = 100_000


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def vectors(rows: int, seed: int, dims: int = DIMS) -> np.ndarray:
    out = np.empty((rows, dims), dtype=np.float32)
    rng = np.random.default_rng(seed)
    for start in range(0, rows, CHUNK):
        stop = min(rows, start + CHUNK)
        out[start:stop] = structured_vectors(rng, stop - start, dims)
    return out


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def recall(truth: np.ndarray, got: np.ndarray) -> float:
    return float(np.mean([len(set(t) & set(g)) / K for t, g in zip(truth, got, strict=True)]))


class Engine:
    """Adapter: build(data) or load(path), save(path), then query(one vector) -> labels."""

    name = ""
    params: ClassVar[dict[str, object]] = {}
    cacheable = True

    def build(self, data: np.ndarray) -> None: ...
    def query(self, q: np.ndarray) -> np.ndarray: ...
    def save(self, path: Path) -> None: ...
    def load(self, path: Path, data: np.ndarray) -> None: ...


class OursHnsw(Engine):
    name = "faiss-hnsw-sq8 + re-rank (nextesy)"
    params: ClassVar[dict[str, object]] = {
        "M": engine.HNSW_M,
        "efConstruction": engine.HNSW_EF_CONSTRUCTION,
        "efSearch": engine.HNSW_EF_SEARCH,
        "rerank": engine.RERANK,
    }

    def build(self, data: np.ndarray) -> None:
        self.index = engine.FaissHnsw(data.shape[1])
        self.index.add(data)
        engine.prefer_huge_pages(self.index._index)  # as the service has it once it loads the segment

    def query(self, q: np.ndarray) -> np.ndarray:
        return self.index.search(q.reshape(1, -1), K)[1][0]

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self.index._index, str(path))

    def load(self, path: Path, data: np.ndarray) -> None:
        import faiss

        index = faiss.read_index(str(path))
        engine.prefer_huge_pages(index)  # as FaissHnsw.load, which the service uses
        self.index = engine.FaissHnsw(data.shape[1], index, data)


class FaissFlat(Engine):
    name = "faiss-flat (exact)"
    cacheable = False

    def build(self, data: np.ndarray) -> None:
        import faiss

        self.index = faiss.IndexFlatIP(data.shape[1])
        self.index.add(data)

    def query(self, q: np.ndarray) -> np.ndarray:
        return self.index.search(q.reshape(1, -1), K)[1][0]


class Hnswlib(Engine):
    name = "hnswlib (defaults)"
    params: ClassVar[dict[str, object]] = {"M": 16, "ef_construction": 200, "ef": 10}

    def build(self, data: np.ndarray) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=data.shape[1])
        p = self.params
        self.index.init_index(max_elements=len(data), M=p["M"], ef_construction=p["ef_construction"])
        self.index.add_items(data)
        self.index.set_ef(self.params["ef"])

    def query(self, q: np.ndarray) -> np.ndarray:
        return self.index.knn_query(q, k=K, num_threads=1)[0][0]

    def save(self, path: Path) -> None:
        self.index.save_index(str(path))

    def load(self, path: Path, data: np.ndarray) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=data.shape[1])
        self.index.load_index(str(path), max_elements=len(data))
        self.index.set_ef(self.params["ef"])


class HnswlibMatched(Hnswlib):
    name = "hnswlib (our M/ef)"
    params: ClassVar[dict[str, object]] = {
        "M": engine.HNSW_M,
        "ef_construction": engine.HNSW_EF_CONSTRUCTION,
        "ef": engine.HNSW_EF_SEARCH,
    }


class Usearch(Engine):
    name = "usearch (defaults)"
    params: ClassVar[dict[str, object]] = {
        "metric": "ip",
        "connectivity": 16,
        "expansion_add": 128,
        "expansion_search": 64,
    }

    def build(self, data: np.ndarray) -> None:
        from usearch.index import Index

        p = self.params
        self.index = Index(
            ndim=data.shape[1],
            metric="ip",
            connectivity=p["connectivity"],
            expansion_add=p["expansion_add"],
            expansion_search=p["expansion_search"],
        )
        self.index.add(np.arange(len(data)), data)

    def query(self, q: np.ndarray) -> np.ndarray:
        return np.asarray(self.index.search(q, K).keys)

    def save(self, path: Path) -> None:
        self.index.save(str(path))

    def load(self, path: Path, data: np.ndarray) -> None:
        from usearch.index import Index

        self.index = Index.restore(str(path))
        self.index.expansion_search = self.params["expansion_search"]


class UsearchMatched(Usearch):
    name = "usearch (our M/ef)"
    params: ClassVar[dict[str, object]] = {
        "metric": "ip",
        "connectivity": engine.HNSW_M,
        "expansion_add": engine.HNSW_EF_CONSTRUCTION,
        "expansion_search": engine.HNSW_EF_SEARCH,
    }


ENGINES = {
    "faiss-hnsw": OursHnsw,
    "faiss-flat": FaissFlat,
    "hnswlib": Hnswlib,
    "hnswlib-matched": HnswlibMatched,
    "usearch": Usearch,
    "usearch-matched": UsearchMatched,
}


def cached_array(cache: Path | None, name: str, make) -> np.ndarray:  # type: ignore[no-untyped-def]
    path = cache / f"{name}.npy" if cache else None
    if path and path.exists():
        return np.load(path)
    array = make()
    if path:
        np.save(path, array)
    return array


def exact_truth(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    import faiss

    flat = faiss.IndexFlatIP(data.shape[1])
    flat.add(data)
    return flat.search(queries, K)[1]


def exact_among(data: np.ndarray, queries: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Labels of each query's exact top K among `rows` of `data` (all rows if None), added to the flat index
    100k at a time, so a memory-mapped index's rows are never copied whole."""
    import faiss

    rows = np.arange(len(data)) if rows is None else rows
    flat = faiss.IndexFlatIP(data.shape[1])
    for start in range(0, len(rows), 100_000):
        flat.add(np.ascontiguousarray(data[rows[start : start + 100_000]]))
    return rows[flat.search(queries, K)[1]]


def record(size: int | str, group: str, label: str, value: object) -> None:
    """Put `value` under `sizes[size][group][label]` of bench/results/hot.json, the file read again just
    before so that what other runs wrote meanwhile stays."""
    results = json.loads(RESULTS.read_text())
    results["sizes"].setdefault(str(size), {}).setdefault(group, {})[label] = value
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def cache_key(engine: type[Engine], size: int) -> str:
    """The name an engine's build at `size` is cached under: its class and its parameters."""
    return f"{engine.__name__}-{size}-" + "-".join(f"{v}" for v in engine.params.values())


def measure(
    adapter: Engine, data: np.ndarray, queries: np.ndarray, truth: np.ndarray, runs: int, cache: Path | None
) -> dict[str, object]:
    gc.collect()
    before = rss_mb()
    key = cache_key(type(adapter), len(data))
    stored, stamp = (cache / f"{key}.index", cache / f"{key}.json") if cache else (None, None)
    cached = bool(adapter.cacheable and stored and stored.exists() and stamp and stamp.exists())
    build_load, build_note = load1(), None
    if cached:
        adapter.load(stored, data)  # type: ignore[arg-type]
        built = json.loads(stamp.read_text())  # type: ignore[union-attr]
        build_s, build_load, build_note = built["build_s"], built.get("load_1m"), built.get("note")
    else:
        started = time.perf_counter()
        adapter.build(data)
        build_s = round(time.perf_counter() - started, 1)
        build_load = max(build_load, load1())
        if adapter.cacheable and stored and stamp:
            adapter.save(stored)
            stamp.write_text(json.dumps({"build_s": build_s, "load_1m": build_load}))
    memory = rss_mb() - before
    import faiss

    # Served as the query service serves them: one thread per query (see service.create_app).
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    for q in queries[:50]:  # warm-up
        adapter.query(q)
    load_before = load1()
    latencies, cpu, answers = [], [], []
    for q in queries[:runs]:
        t, c = time.perf_counter(), time.thread_time()
        answers.append(adapter.query(q))
        latencies.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
    faiss.omp_set_num_threads(threads)
    return {
        "engine": adapter.name,
        "params": adapter.params,
        "build_s": build_s,
        "build_load_1m": build_load,
        "cached": cached,
        **({"build_note": build_note} if build_note else {}),
        **percentiles(latencies),
        # The CPU the querying thread itself used: wall-clock tails far above these are the scheduler
        # running other processes on the shared cores, not the search.
        "cpu_p50_ms": percentiles(cpu)["p50_ms"],
        "cpu_p99_ms": percentiles(cpu)["p99_ms"],
        "qps_one_thread": round(len(latencies) / sum(latencies), 1),
        "recall_at_10": round(recall(truth[: len(answers)], np.asarray(answers)), 4),
        "memory_mb": round(memory, 1),
        "queries": len(latencies),
        "load_1m": [load_before, load1()],
    }


def incremental(home: Path, ours: OursHnsw) -> dict[str, object]:
    """A 10k batch into the published 1M index as the update path adds it (the main graph has no delta yet,
    so the batch starts one), while another thread keeps querying."""
    import pyarrow as pa

    from nextesy_assets.lib.hot import segments
    from nextesy_assets.lib.hot.update import next_version

    root = home / "hot"
    manifest = segments.read_manifest(root)
    assert manifest is not None and len(manifest.segments) == 1
    batch = vectors(10_000, seed=77)
    queries = vectors(200, seed=78)
    day = max(manifest.segments[0].days)
    meta = pa.table(
        {
            "id": [f"new-{i}" for i in range(len(batch))],
            "ts_us": np.full(len(batch), day * segments.US_PER_DAY, np.int64),
            "source": ["bench"] * len(batch),
        }
    )
    stop, served, worst = threading.Event(), [0], [0.0]

    def keep_querying() -> None:
        i = 0
        while not stop.is_set():
            t = time.perf_counter()
            ours.query(queries[i % len(queries)])
            worst[0] = max(worst[0], time.perf_counter() - t)
            served[0] += 1
            i += 1

    thread = threading.Thread(target=keep_querying)
    thread.start()
    started = time.perf_counter()
    next_version(root, "bench-delta", "bench", None, batch, meta, manifest.window_start, DIMS)
    seconds = time.perf_counter() - started
    stop.set()
    thread.join()
    shutil.rmtree(root / segments.SEGMENTS / "bench-delta")  # the published index stays as it was
    return {
        "rows": len(batch),
        "into_rows": manifest.segments[0].rows,
        "as": "a new delta graph beside the main one (update.next_version)",
        "seconds": round(seconds, 2),
        "queries_served_meanwhile": served[0],
        "worst_query_ms_meanwhile": round(worst[0] * 1000, 2),
    }


def publish(
    ours: OursHnsw, data: np.ndarray, home: Path, ts_us: np.ndarray | None = None, build_order: bool = False
) -> object:
    """Write the built index as a one-segment hot index under `home`, as hot_index would: a main graph built
    at once, its rows stored in the graph's breadth-first order as `segments.build_segment` stores them (or
    as built, with `build_order`), every row at now (or at `ts_us`), in a week's window ending today. Row i
    of `data` gets the id "v{i}" wherever it is stored; `ours` is left as it was. Returns its SegmentInfo."""
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nextesy_assets.lib.hot import segments

    root = home / "hot"
    path = root / segments.SEGMENTS / "bench"
    if build_order:
        order = np.arange(len(data))
        ours.index.save(path, with_vectors=False)  # the graph; the rows go to the segment's own file
    else:
        order = ours.index.locality_order()
        stored = engine.FaissHnsw(data.shape[1], faiss.clone_index(ours.index._index))
        stored.renumber(order)
        stored.save(path, with_vectors=False)
        del stored
    segments.write_vectors(path, data, order)
    now_us = int(time.time() * 1e6)
    ts_us = np.full(len(data), now_us, np.int64) if ts_us is None else ts_us[order]
    meta = pa.table({"id": [f"v{i}" for i in order], "ts_us": ts_us, "source": ["bench"] * len(data)})
    pq.write_table(meta, path / segments.META)
    days, counts = np.unique(ts_us // segments.US_PER_DAY, return_counts=True)
    info = segments.SegmentInfo(
        name="bench",
        model="bench",
        rows=len(data),
        engine="faiss-hnsw",
        days={int(d): int(c) for d, c in zip(days, counts, strict=True)},
        built_rows=len(data),
    )
    today = int(now_us // segments.US_PER_DAY)
    segments.write_manifest(
        root,
        segments.Manifest(
            version=1,
            source_snapshot_id=1,
            source_snapshot_ms=now_us // 1000,
            window_days=7,
            window_start=today - 6,
            dims=DIMS,
            segments=[info],
        ),
    )
    return info


def published_segment(hot: Path):  # type: ignore[no-untyped-def]
    """The one segment of an index `publish` wrote under `hot` (its hot directory), loaded as the service loads it."""
    from nextesy_assets.lib.hot import segments

    manifest = segments.read_manifest(hot)
    assert manifest is not None and len(manifest.segments) == 1, "one published segment expected"
    return segments.load_segment(hot, manifest.segments[0], manifest.dims, manifest.window_start)


def search_body(vector: list[float]) -> str:
    """The POST /search body of one bench query, as every HTTP client here and request_cost.py send it."""
    return json.dumps({"vector": vector, "k": K, "model": "bench"})


def _client(args: tuple[int, int, list[list[float]]]) -> list[float]:
    import http.client

    port, requests, queries = args
    conn = http.client.HTTPConnection("127.0.0.1", port)
    out = []
    for i in range(requests):
        body = search_body(queries[i % len(queries)])
        t = time.perf_counter()
        conn.request("POST", "/search", body, {"content-type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        out.append(time.perf_counter() - t if response.status == 200 and b'"tier":"hot"' in payload else -1.0)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children so far (the server and any worker processes)."""
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        times = p.cpu_times()
        total += times.user + times.system
    return total


def wrk_load(port: int, clients: int, seconds: int, queries: np.ndarray, work: Path, server: int) -> dict[str, object]:
    """Closed-loop load from wrk (C, so the clients take little of the two cores): `clients` connections."""
    bodies = work / "bodies.jsonl"
    bodies.write_text("".join(search_body(q.tolist()) + "\n" for q in queries))
    script = Path(__file__).with_name("search.lua")
    command = [
        "wrk",
        "-t2",
        f"-c{clients}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
    ]
    load_before, cpu_before, busy_before = load1(), cpu_seconds(server), machine_busy_seconds()
    wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(command, env={**os.environ, "BODIES": str(bodies)}, capture_output=True, text=True, check=True)
    wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu, busy = cpu_seconds(server) - cpu_before, machine_busy_seconds() - busy_before
    wrk_cpu = wrk_after.ru_utime + wrk_after.ru_stime - wrk_before.ru_utime - wrk_before.ru_stime
    result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    return {
        "client": "wrk",
        "clients": clients,
        **result,
        "qps": round(result["requests"] / result["seconds"], 1),
        # What one request costs the server, whatever else the machine runs: the number to compare.
        "server_cpu_us_per_request": round(cpu / max(result["requests"], 1) * 1e6),
        "wrk_cpu_us_per_request": round(wrk_cpu / max(result["requests"], 1) * 1e6),
        # CPU seconds per second that neither the server nor wrk used while the load ran (of the machine's
        # cpu_count): other jobs on a shared machine, the measure of how quiet a run was.
        "others_cpu_cores": round(max(0.0, busy - cpu - wrk_cpu) / result["seconds"], 2),
        "load_1m": [load_before, load1()],
    }


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent not idle since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def start_server(home: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """`nextesy serve` over the index published under `home`, on a free port, once /healthz answers."""
    import http.client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "NEXTESY_HOME": str(home), "NEXTESY_DIMS": str(DIMS), **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    nextesy = Path(sys.executable).parent / "nextesy"
    server = subprocess.Popen(
        [str(nextesy), "serve", "--port", str(port)], env=env, start_new_session=True, stderr=subprocess.DEVNULL
    )
    for _ in range(600):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.5)
    return server, port


def http_load(home: Path, clients: int, requests: int, queries: np.ndarray) -> dict[str, object]:
    server, port = start_server(home)
    try:
        as_lists = [q.tolist() for q in queries]
        assert all(x >= 0 for x in _client((port, 50, as_lists)))  # warm-up, and every answer is a hot one
        out: dict[str, object] = {"server_rss_mb": round(rss_mb(server.pid), 1)}
        if shutil.which("wrk"):
            wrk_load(port, clients, 3, queries, home, server.pid)  # warm-up
            out["wrk"] = wrk_load(port, clients, 20, queries, home, server.pid)
        load_started = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(clients) as pool:
            results = pool.map(_client, [(port, requests, as_lists)] * clients)
        wall = time.perf_counter() - load_started
        latencies = [x for r in results for x in r]
        good = [x for x in latencies if x >= 0]
        out["python_clients"] = {
            "client": "python processes",
            "clients": clients,
            "requests": len(latencies),
            "errors": len(latencies) - len(good),
            **percentiles(good),
            "qps": round(len(good) / wall, 1),
        }
        return out
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--queries", type=int, default=1000, help="Queries per ANN engine (exact gets fewer).")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500, help="HTTP requests per client.")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/nextesy-bench-hot-cache"), help="Built indexes.")
    parser.add_argument("--no-cache", action="store_true", help="Build every index afresh.")
    args = parser.parse_args()
    import faiss

    cache = None if args.no_cache else args.cache
    if cache:
        cache.mkdir(parents=True, exist_ok=True)

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "faiss": faiss.__version__}
    results.setdefault("sizes", {})
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"--- {size} x {DIMS}: generating", flush=True)
        data = cached_array(cache, f"data-{size}", functools.partial(vectors, size, 1))
        queries = vectors(args.queries, seed=2)
        truth = cached_array(cache, f"truth-{size}-{args.queries}", functools.partial(exact_truth, data, queries))
        row: dict[str, object] = {"engines": []}
        ours: OursHnsw | None = None
        for name in args.engines.split(","):
            adapter = ENGINES[name]()
            runs = args.queries if name != "faiss-flat" else min(args.queries, 200 if size <= 100_000 else 50)
            print(f"{name}: building", flush=True)
            measured = measure(adapter, data, queries, truth, runs, cache)
            print(json.dumps(measured), flush=True)
            row["engines"].append(measured)  # type: ignore[union-attr]
            if isinstance(adapter, OursHnsw):
                ours = adapter
            else:
                del adapter
                gc.collect()
        if ours is not None:
            work = Path(tempfile.mkdtemp(prefix="nextesy-bench-hot-"))
            publish(ours, data, work / "home")
            row["incremental_10k"] = incremental(work / "home", ours)
            print(json.dumps(row["incremental_10k"]), flush=True)
            del ours
            gc.collect()
            row["http"] = http_load(work / "home", args.clients, args.requests, queries)
            print(json.dumps(row["http"]), flush=True)
        # Engines not rerun and the other experiments' records stay as they were.
        previous = results["sizes"].get(str(size), {})
        rerun = {e["engine"] for e in row["engines"]}  # type: ignore[union-attr]
        kept = [e for e in previous.get("engines", []) if e["engine"] not in rerun]
        results["sizes"][str(size)] = {**previous, **row, "engines": [*row["engines"], *kept]}  # type: ignore[misc]
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        del data
        gc.collect()

    print(f"\n{'size':>8} {'engine':<22} {'build s':>8} {'p50 ms':>7} {'p99 ms':>7} {'QPS':>8} {'recall':>7} {'MB':>7}")
    for size, row in results["sizes"].items():
        for e in row.get("engines", []):  # a size only other scripts measured has none
            print(
                f"{size:>8} {e['engine']:<22} {e['build_s']:>8} {e['p50_ms']:>7} {e['p99_ms']:>7} "
                f"{e['qps_one_thread']:>8} {e['recall_at_10']:>7} {e['memory_mb']:>7}"
            )
        for h in (row.get("http", {}).get(kind) for kind in ("wrk", "python_clients")):
            if h:
                label = f"HTTP {h['clients']}x {h['client']}"
                print(
                    f"{size:>8} {label:<22} {'':>8} {h['p50_ms']:>7} {h['p99_ms']:>7} {h['qps']:>8} "
                    f"errors={h['errors']}"
                )
        if "incremental_10k" in row:
            i = row["incremental_10k"]
            print(
                f"{size:>8} 10k batch: {i['seconds']} s, {i['queries_served_meanwhile']} queries served "
                f"meanwhile (worst {i['worst_query_ms_meanwhile']} ms)"
            )
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
