"""What a hot query costs the service besides its graph walk, measured in-process, beside the walk itself.

    flock /tmp/nextesy-heavy.lock .venv/bin/python bench/hot/request_cost.py /tmp/nextesy-bench-hot-XXXX/home \
        [--queries 1000] [--repeat 7] [--label NAME [--size 1000000]]

Over an index run.py published under `home`, in one run, CPU time per query (best of `--repeat` passes
over run.py's held-out queries, sent as wrk sends them):

1. `walk_us`: FAISS's graph walks of a query, in every segment, at the breadth and with the filter the
   service gives them;
2. `request_us`: one POST /search through the service's ASGI app (parsing the body, the query's checks,
   the re-rank, the results, the metrics, the response), with each walk's answer replayed from (1), so
   this is the request's own cost;
3. `parse_us`: the body parse alone, a part of (2).

The HTTP server's own work (uvicorn, the socket) is not in (2): `http_runs.py` measures everything together
as the server's CPU per request. With --label the result is recorded under "request_cost" of the index
size's entry (or --size's) in bench/results/hot.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.hot.run import DIMS, load1, record, search_body, vectors  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("home", type=Path)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--label", help="Record the result under this name in hot.json.")
    parser.add_argument("--size", help="The size entry of hot.json to record under (default: the index's rows).")
    args = parser.parse_args()
    os.environ["NEXTESY_HOME"], os.environ["NEXTESY_DIMS"] = str(args.home), str(DIMS)

    import faiss

    from nextesy_assets.lib.hot.service import create_app, parse
    from nextesy_assets.lib.settings import Settings

    app = create_app(Settings.load(), refresh_every_s=None, inline=True)
    faiss.omp_set_num_threads(1)
    segments = app.state.service.index.segments
    queries = vectors(1000, seed=2)[: args.queries]  # run.py's held-out queries
    bodies = [search_body(q.tolist()).encode() for q in queries]

    # Each graph walk as the service makes it (its breadth, its filter) is timed and its answer recorded;
    # replayed after, the walks leave the request.
    answers: dict[tuple[int, bytes], object] = {}
    walking = [0.0]
    replaying = [False]
    for number, segment in enumerate(segments):
        walker = segment.index._native_walker()  # type: ignore[attr-defined]
        # The walk the service makes: the native one (NEXTESY_HOT_WALK=native), else FAISS's search.
        graph = walker if walker is not None else segment.index._index  # type: ignore[attr-defined]

        def walk_or_replay(x, *args, number=number, walk=graph.search, **kwargs):  # type: ignore[no-untyped-def]
            key = (number, x.tobytes(), args[0])
            if replaying[0]:
                return answers[key]
            started = time.process_time()
            answers[key] = walk(x, *args, **kwargs)
            walking[0] += time.process_time() - started
            return answers[key]

        if walker is not None:
            segment.index._walker = types.SimpleNamespace(search=walk_or_replay)  # type: ignore[attr-defined]
        else:
            graph.search = walk_or_replay

    def best_us(run) -> float:  # type: ignore[no-untyped-def]
        times = []
        for _ in range(args.repeat):
            started = time.process_time()
            run()
            times.append((time.process_time() - started) / len(bodies) * 1e6)
        return round(min(times), 1)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/search",
        "raw_path": b"/search",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }

    async def requests() -> None:
        for body in bodies:
            sent: list[dict[str, object]] = []

            async def receive(body: bytes = body) -> dict[str, object]:
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message: dict[str, object], sent: list[dict[str, object]] = sent) -> None:
                sent.append(message)

            await app(dict(scope), receive, send)
            assert sent[0]["status"] == 200, sent

    loop = asyncio.new_event_loop()
    walks = []
    for _ in range(args.repeat):
        walking[0] = 0.0
        loop.run_until_complete(requests())
        walks.append(walking[0] / len(bodies) * 1e6)
    walk_us = round(min(walks), 1)
    replaying[0] = True
    request_us = best_us(lambda: loop.run_until_complete(requests()))
    parse_us = best_us(lambda: [parse(body) for body in bodies])
    result = {
        "rows": sum(s.live_rows for s in segments),
        "segments": len(segments),
        "queries": len(bodies),
        "walk_us": walk_us,
        "request_us": request_us,
        "parse_us": parse_us,
        "request_share_of_walk": round(request_us / walk_us, 3),
        "load_1m": load1(),
    }
    print(json.dumps(result))
    if args.label:
        record(args.size or result["rows"], "request_cost", args.label, result)


if __name__ == "__main__":
    main()
