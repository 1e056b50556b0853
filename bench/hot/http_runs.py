"""Repeated HTTP load runs against an index run.py published: `nextesy serve` under wrk, N runs in a row.

    flock /tmp/nextesy-heavy.lock .venv/bin/python bench/hot/http_runs.py /tmp/nextesy-bench-hot-XXXX/home \
        [--runs 5] [--seconds 10] [--clients 8] [--label NAME [--size 1000000]] [--env NEXTESY_HOT_WORKERS=2]

The same load as run.py's HTTP step (wrk, keep-alive connections, the held-out query vectors in turn),
without rebuilding or republishing the index, so server settings can be compared run against run on a
shared machine. Each run records p50/p99/qps/errors, the server's CPU per request and the 1-minute load
average; with --label the runs are appended under "http_runs" of the size's entry in hot.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.hot.run import _client, load1, record, start_server, vectors, wrk_load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("home", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--label", help="Record the runs under this name in hot.json.")
    parser.add_argument("--size", help="The size entry of hot.json to record under (default: the index's rows).")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server's environment.")
    args = parser.parse_args()

    server, port = start_server(args.home, dict(item.split("=", 1) for item in args.env))
    queries = vectors(1000, seed=2)  # run.py's held-out queries
    runs = []
    try:
        rows = int(json.loads(_healthz(port))["vectors"])
        assert all(x >= 0 for x in _client((port, 50, [q.tolist() for q in queries])))  # every answer a hot one
        work = Path(args.home)
        wrk_load(port, args.clients, 3, queries, work, server.pid)  # warm-up
        for _ in range(args.runs):
            run = wrk_load(port, args.clients, args.seconds, queries, work, server.pid)
            print(json.dumps(run), flush=True)
            runs.append(run)
    finally:
        server.terminate()
        server.wait(timeout=30)
    quietest = min(runs, key=lambda r: r["load_1m"][0])
    print(f"rows={rows} best p99 {min(r['p99_ms'] for r in runs)} ms; quietest run (load {quietest['load_1m']}):")
    print(json.dumps(quietest))
    if args.label:
        value = {"env": args.env, "seconds": args.seconds, "load_1m_after": load1(), "runs": runs}
        record(args.size or rows, "http_runs", args.label, value)


def _healthz(port: int) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/healthz")
    return conn.getresponse().read()


if __name__ == "__main__":
    main()
