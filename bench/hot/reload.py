"""HTTP latency while the serving workers load a new index version, beside runs where nothing is published.

    flock /tmp/nextesy-heavy.lock .venv/bin/python bench/hot/reload.py /tmp/nextesy-bench-hot-XXXX/home \
        [--segment delta] [--pairs 3] [--seconds 6] [--at 1.5] [--in-process] [--label NAME [--size 1000000]]

An update publishes a new version of a segment after every batch (the delta, or the main graph after a
merge), and each worker process of `nextesy serve` loads it in a background thread while it answers
queries. This measures what that costs the queries: over an index run.py or window.py published under
`home`, wrk's closed-loop load (8 connections) runs `--seconds`; in a "reload" run, `--at` seconds in, the
chosen segment is published again under a new name (its files hard-linked, a new manifest version), so
every worker loads it whole, exactly as after an update; in a "steady" run nothing is published. The two
alternate `--pairs` times. Each run records wrk's p50/p99/max, and a reload run how long from the
publication until every worker served the new version (polled beside the load; the run may end first).
The manifest is put back as it was at the end. With --label the runs are recorded under "reload" of the
size's entry (or --size's) in bench/results/hot.json.

`--in-process` measures the same thing without HTTP and its noise: one thread searches the index (the
service's `HotIndex.search`, one query after another) while another loads the segment as a worker's
refresher does (`load_segment`); the search times during each load are compared with `--seconds` of
searches with nothing loading, alternated `--pairs` times. What a load costs a query here is its hold on
the GIL: the two threads have a core each.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.hot.run import RESULTS, _client, load1, start_server, vectors, wrk_load  # noqa: E402
from nextesy_assets.lib.hot import segments  # noqa: E402


def republish(root: Path, original: segments.Manifest, which: str, serial: int) -> int:
    """Publish `original` again with its main (or delta) segment under a new name; the new version."""
    info = original.segments[0] if which == "main" else original.segments[-1]
    folder = root / segments.SEGMENTS
    twin = f"{info.name}-reload-{serial}"
    shutil.rmtree(folder / twin, ignore_errors=True)
    (folder / twin).mkdir()
    for item in (folder / info.name).iterdir():
        os.link(item, folder / twin / item.name)
    manifest = segments.Manifest.from_json(original.to_json())
    assert manifest is not None
    manifest.version = original.version + serial
    for entry in manifest.segments:
        if entry.name == info.name:
            entry.name = twin
    segments.write_manifest(root, manifest)
    return manifest.version


def served_versions(port: int, tries: int = 16) -> set[int]:
    """Index versions the workers answer /healthz with (new connections reach either worker)."""
    seen = set()
    for _ in range(tries):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/healthz")
        seen.add(int(json.loads(conn.getresponse().read())["index_version"]))
        conn.close()
    return seen


def latencies_ms(index, queries, seconds: float, beside: threading.Thread | None = None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Search times, one query after another, for `seconds` or (with `beside`) until that thread ends."""
    model = index.segments[0].info.model
    out, stop, i = [], time.monotonic() + seconds, 0
    if beside is not None:
        beside.start()
    while (beside.is_alive() if beside is not None else time.monotonic() < stop) or not out:
        started = time.perf_counter()
        index.search(queries[i % len(queries)], 10, model)
        out.append(time.perf_counter() - started)
        i += 1
    return np.asarray(out) * 1000


def in_process(args: argparse.Namespace, root: Path, original: segments.Manifest) -> list[dict[str, object]]:
    import faiss

    from nextesy_assets.lib.hot.search import HotIndex

    faiss.omp_set_num_threads(1)
    index = HotIndex(root)
    info = original.segments[0] if args.segment == "main" else original.segments[-1]
    queries = vectors(1000, seed=2)
    latencies_ms(index, queries, 2)  # warm-up
    runs = []
    for _ in range(args.pairs):
        loaded: dict[str, float] = {}

        def load(loaded: dict[str, float] = loaded) -> None:
            started = time.perf_counter()
            segments.load_segment(root, info, original.dims, original.window_start)
            loaded["s"] = time.perf_counter() - started

        for kind, beside in (("steady", None), ("reload", threading.Thread(target=load))):
            ms = latencies_ms(index, queries, args.seconds, beside)
            run = {
                "run": kind,
                "queries": len(ms),
                **{f"p{q}_ms": round(float(np.percentile(ms, q)), 3) for q in (50, 99)},
            }
            run["max_ms"] = round(float(ms.max()), 3)
            run["over_10ms"] = int((ms > 10).sum())  # a stall of the machine's own shows here in both kinds
            if kind == "reload":
                run["load_s"] = round(loaded["s"], 2)
            run["load_1m"] = load1()
            print(json.dumps(run), flush=True)
            runs.append(run)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("home", type=Path)
    parser.add_argument("--segment", choices=("delta", "main"), default="delta")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--at", type=float, default=1.5, help="Seconds into a reload run to publish.")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--in-process", action="store_true", help="Search and load in one process, no HTTP.")
    parser.add_argument("--label", help="Record the runs under this name in hot.json.")
    parser.add_argument("--size", help="The size entry of hot.json to record under (default: the index's rows).")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server's environment.")
    args = parser.parse_args()

    root = args.home / "hot"
    original = segments.read_manifest(root)
    assert original is not None and original.segments, f"no hot index under {root}"
    runs = in_process(args, root, original) if args.in_process else over_http(args, root, original)
    for kind in ("steady", "reload"):
        mine = [r for r in runs if r["run"] == kind]
        print(kind, "p99", [r["p99_ms"] for r in mine], "max", [r["max_ms"] for r in mine])
    if args.label:
        results = json.loads(RESULTS.read_text())
        entry = results["sizes"].setdefault(args.size or str(original.rows), {}).setdefault("reload", {})
        entry[args.label] = {
            "segment": args.segment,
            "in_process": args.in_process,
            "env": args.env,
            "seconds": args.seconds,
            "published_at_s": None if args.in_process else args.at,
            "load_1m_after": load1(),
            "runs": runs,
        }
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def over_http(args: argparse.Namespace, root: Path, original: segments.Manifest) -> list[dict[str, object]]:
    server, port = start_server(args.home, dict(item.split("=", 1) for item in args.env))
    queries = vectors(1000, seed=2)  # run.py's held-out queries
    runs = []
    try:
        assert all(x >= 0 for x in _client((port, 50, [q.tolist() for q in queries])))  # every answer a hot one
        wrk_load(port, args.clients, 3, queries, args.home, server.pid)  # warm-up
        for serial in range(1, 2 * args.pairs + 1):
            reload = serial % 2 == 1
            published: dict[str, float] = {}

            def publish(serial: int = serial, published: dict[str, float] = published) -> None:
                version = republish(root, original, args.segment, serial)
                at = time.monotonic()
                while served_versions(port) != {version}:  # a few /healthz a second beside wrk's load
                    time.sleep(0.1)
                published["all_workers_on_new_version_s"] = round(time.monotonic() - at, 2)

            timer = threading.Timer(args.at, publish) if reload else None
            if timer is not None:
                timer.start()
            run = {"run": "reload" if reload else "steady"}
            run.update(wrk_load(port, args.clients, args.seconds, queries, args.home, server.pid))
            if timer is not None:
                timer.join()
                run.update(published)
                segments.write_manifest(root, original)  # back, and wait until every worker serves it again
                while served_versions(port) != {original.version}:
                    time.sleep(0.2)
            print(json.dumps(run), flush=True)
            runs.append(run)
    finally:
        server.terminate()
        server.wait(timeout=30)
        segments.write_manifest(root, original)
        for serial in range(1, 2 * args.pairs + 1):
            for info in original.segments:
                shutil.rmtree(root / segments.SEGMENTS / f"{info.name}-reload-{serial}", ignore_errors=True)
    return runs


if __name__ == "__main__":
    main()
