"""The floor an HTTP layer puts under every hot query: the CPU per request of servers that search nothing.

    flock /tmp/nextesy-heavy.lock .venv/bin/python bench/hot/http_floor.py [--seconds 10] [--rounds 3]

`nextesy serve` answers POST /search through uvicorn (httptools, uvloop) and a plain ASGI endpoint. Under
run.py's HTTP load (wrk, 8 keep-alive connections, the bench's 768-d query bodies) this measures what one
request costs two servers that read the body whole and send a fixed answer the size of a real one (ten
results): uvicorn with an ASGI app, the layer nextesy uses, and a bare asyncio protocol on uvloop that
parses with httptools, the least a Python server on the same parser does. One process each, in
alternating rounds; the difference is what a leaner HTTP layer could take off a 1M query's ~1 ms of
server CPU. Writes "http_floor" in bench/results/hot.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.hot.run import RESULTS, load1, vectors, wrk_load  # noqa: E402

# An answer of ten hits, as the service writes them (ids, scores, timestamps, sources).
ANSWER = json.dumps(
    {
        "results": [
            {
                "id": f"v{123456 + i}",
                "score": 0.8123456 - i / 100,
                "ts": "2026-12-04T01:02:03.456789+00:00",
                "source": "bench",
            }
            for i in range(10)
        ],
        "tier": "hot",
        "snapshot_id": 1,
    },
    separators=(",", ":"),
).encode()
SERVERS = ("uvicorn_asgi", "uvloop_httptools_protocol")


async def asgi_app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def, type-arg]
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


class BareProtocol(asyncio.Protocol):
    RESPONSE = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(ANSWER)).encode()
        + b"\r\n\r\n"
    ) + ANSWER

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        import httptools

        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        b"".join(self.body)
        self.body = []
        self.transport.write(self.RESPONSE)  # type: ignore[attr-defined]


def serve(kind: str, port: int) -> None:
    import uvloop

    if kind == "uvicorn_asgi":
        import uvicorn

        uvicorn.run(
            asgi_app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            http="httptools",
            loop="uvloop",
            lifespan="off",
        )
        return

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(BareProtocol, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


def start(kind: str) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port)])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return server, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return

    queries = vectors(1000, seed=2)
    work = Path(tempfile.mkdtemp(prefix="nextesy-http-floor-"))
    runs: dict[str, list[dict[str, object]]] = {kind: [] for kind in SERVERS}
    for _ in range(args.rounds):
        for kind in SERVERS:
            server, port = start(kind)
            try:
                wrk_load(port, args.clients, 2, queries, work, server.pid)  # warm-up
                run = wrk_load(port, args.clients, args.seconds, queries, work, server.pid)
            finally:
                server.terminate()
                server.wait(timeout=10)
            print(kind, json.dumps(run), flush=True)
            runs[kind].append(run)
    summary = {kind: [r["server_cpu_us_per_request"] for r in rs] for kind, rs in runs.items()}
    print("server CPU us per request:", json.dumps(summary))
    results = json.loads(RESULTS.read_text())
    results["http_floor"] = {"answer_bytes": len(ANSWER), "load_1m_after": load1(), "runs": runs}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
