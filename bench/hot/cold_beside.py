"""Hot query latency while cold queries run in the same worker: the table read in the worker or in its child.

    flock /tmp/nextesy-heavy.lock .venv/bin/python bench/hot/cold_beside.py <home> [--seconds 5] [--pairs 3] \
        [--label NAME]

Over the index and table under `home` (`make demo`'s, or run.py's), one thread sends hot queries to the
service (`Service.search`, as a worker's event loop does) one after another, while another thread sends
cold ones (a time range before the hot window) back to back. Alternating, the cold tier reads the table
in the worker's own process (`ColdTier`) and in its child process (`ColdProcess`, as served); a run with no
cold queries gives the baseline. Each run records the hot queries' p50/p99/max and how many cold queries
were answered. With --label the runs are recorded under "cold_beside" in bench/results/hot.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.hot.run import RESULTS, load1  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("home", type=Path)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--label", help="Record the runs under this name in hot.json.")
    args = parser.parse_args()
    os.environ["NEXTESY_HOME"] = str(args.home)
    index_dims = json.loads((args.home / "hot" / "manifest.json").read_text())["dims"]
    os.environ.setdefault("NEXTESY_DIMS", str(index_dims))

    import faiss

    from nextesy_assets.lib.hot.cold import ColdProcess, ColdTier
    from nextesy_assets.lib.hot.service import SearchRequest, Service
    from nextesy_assets.lib.settings import Settings

    faiss.omp_set_num_threads(1)
    settings = Settings.load()
    service = Service(settings)
    model = max(service.index.models, key=service.index.models.get)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((256, index_dims)).astype(np.float32)
    hot = SearchRequest.model_validate({"k": 10, "model": model})
    until = service.index.window_start.isoformat()
    cold = SearchRequest.model_validate({"k": 10, "model": model, "until": until})
    tiers = {"in_worker": ColdTier(settings), "child_process": ColdProcess(settings)}
    for tier in tiers.values():  # warm: the child started, the table opened
        service.cold = tier
        service.search(cold, vectors[0])

    def run(kind: str) -> dict[str, object]:
        stop = threading.Event()
        answered = [0]

        def colds() -> None:
            while not stop.is_set():
                service.search(cold, vectors[answered[0] % len(vectors)])
                answered[0] += 1

        beside = None
        if kind != "no_cold":
            service.cold = tiers[kind]
            beside = threading.Thread(target=colds)
            beside.start()
        times, end, i = [], time.monotonic() + args.seconds, 0
        while time.monotonic() < end:
            started = time.perf_counter()
            service.search(hot, vectors[i % len(vectors)])
            times.append(time.perf_counter() - started)
            i += 1
        stop.set()
        if beside is not None:
            beside.join()
        ms = np.asarray(times) * 1000
        return {
            "cold_tier": kind,
            "hot_queries": len(ms),
            "hot_p50_ms": round(float(np.percentile(ms, 50)), 3),
            "hot_p99_ms": round(float(np.percentile(ms, 99)), 3),
            "hot_max_ms": round(float(ms.max()), 3),
            "cold_queries": answered[0],
            "load_1m": load1(),
        }

    runs = []
    for _ in range(args.pairs):
        for kind in ("no_cold", "in_worker", "child_process"):
            runs.append(run(kind))
            print(json.dumps(runs[-1]), flush=True)
    tiers["child_process"].close()
    if args.label:
        results = json.loads(RESULTS.read_text())
        results.setdefault("cold_beside", {})[args.label] = {"home_rows": service.index.rows, "runs": runs}
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
