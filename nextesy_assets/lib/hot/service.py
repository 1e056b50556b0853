"""The query service behind `nextesy serve`: similarity search over the hot index, the table as cold tier."""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Literal

import numpy as np
import orjson
from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ... import native
from .. import iceberg
from ..settings import Settings
from . import checks
from .cold import ColdProcess, ColdTier
from .search import HotIndex, QueryError
from .segments import read_manifest

MAX_K = 1000
REFRESH_EVERY_S = 1.0
# How much nicer the refresher thread is than the worker's queries: 10 gives it about a tenth of a busy core.
REFRESH_NICENESS = 10
# How often a server of several workers measures how far the index is behind the table (see keep_staleness).
STALENESS_EVERY_S = 5.0
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class SearchRequest(BaseModel):
    """A similarity query: by `vector` or by the `id` of a stored one, with optional filters."""

    model_config = ConfigDict(extra="forbid")

    vector: list[float] | None = Field(default=None, description="Query vector (any norm; cosine similarity).")
    id: str | None = Field(default=None, description="Id of a stored vector to find the neighbours of.")
    k: int = Field(default=10, ge=1, le=MAX_K, description="How many neighbours.")
    model: str | None = Field(default=None, description="Embedding model; required when the index holds several.")
    source: str | None = None
    since: AwareDatetime | None = Field(default=None, description="ts >= since (with a time zone).")
    until: AwareDatetime | None = Field(default=None, description="ts < until (with a time zone).")
    tier: Literal["auto", "hot", "cold"] = Field(
        default="auto", description="auto: hot when the range lies in the window, else cold."
    )


class Metrics:
    """The service's Prometheus metrics; with `shared_dir`, summed over the worker processes of one server."""

    def __init__(self, shared_dir: Path | None = None) -> None:
        self.shared_dir = shared_dir
        if shared_dir is not None:
            from prometheus_client import values

            # Each process writes its values to files of its own under the directory (a forked worker
            # starts new ones), and /metrics adds them up: whichever worker answers, it counts them all.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(shared_dir)
            values.ValueClass = values.MultiProcessValue()
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nextesy_search_requests", "Search requests by tier and status", ["tier", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "nextesy_search_seconds", "Search latency", ["tier"], buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.rebalanced = Counter(
            "nextesy_hot_connections_rebalanced",
            "Connections a worker closed after a response because it held more than its share (see Balancer)",
            registry=self.registry,
        )
        # Gauges are set when /metrics is asked for; across workers the last one set is the value.
        latest = {"registry": self.registry, "multiprocess_mode": "mostrecent"}
        self.vectors = Gauge("nextesy_hot_index_vectors", "Vectors in the hot index", **latest)  # type: ignore[arg-type]
        self.segments = Gauge("nextesy_hot_index_segments", "Segments in the hot index", **latest)  # type: ignore[arg-type]
        self.lag_snapshots = Gauge(
            "nextesy_hot_index_staleness_snapshots",
            "Table snapshots the index is behind",
            **latest,  # type: ignore[arg-type]
        )
        self.lag_seconds = Gauge(
            "nextesy_hot_index_staleness_seconds",
            "Seconds between the table's current snapshot and the one the index reflects",
            **latest,  # type: ignore[arg-type]
        )
        # Children bound once: a labels() lookup per request is measurable at thousands of requests a second.
        self._hot = (self.latency.labels(tier="hot"), self.requests.labels(tier="hot", status="200"))
        self._cold = (self.latency.labels(tier="cold"), self.requests.labels(tier="cold", status="200"))

    def observe(self, tier: str, seconds: float) -> None:
        latency, count = self._hot if tier == "hot" else self._cold
        latency.observe(seconds)
        count.inc()

    def exposition(self) -> bytes:
        if self.shared_dir is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.shared_dir))
        return generate_latest(registry)


class Service:
    """The hot index, the table for the cold tier, and the metrics, shared by all requests.

    `cold_process`: a cold query's reads of the table run in a child process (`cold.ColdProcess`); False
    reads them in this one.
    """

    def __init__(
        self, settings: Settings, metrics_dir: Path | None = None, lag: object | None = None, cold_process: bool = True
    ) -> None:
        self.settings = settings
        self.index = HotIndex(Path(settings.hot_dir), settings.hot_ef_search, settings.hot_walk)
        self.metrics = Metrics(metrics_dir)
        # (snapshots, seconds) behind the table, kept by the server's parent process (keep_staleness) in
        # shared memory, NaN until first measured; None: this process measures it itself.
        self.lag = lag
        self._table = None
        self._table_lock = threading.Lock()
        # Cold queries read the table in a child process: their Python work would hold this one's GIL.
        self.cold: ColdTier | ColdProcess = ColdProcess(settings) if cold_process else ColdTier(settings)

    def table(self):  # type: ignore[no-untyped-def]
        with self._table_lock:
            if self._table is None:
                self._table = iceberg.embeddings_table(self.settings)
            return self._table

    def staleness(self) -> tuple[int, float] | None:
        """(snapshots, seconds) the index is behind the table's current snapshot; None while not yet known."""
        if self.lag is not None:
            snapshots, seconds = self.lag  # type: ignore[misc]
            return None if math.isnan(seconds) else (int(snapshots), seconds)
        lag = checks.staleness(self.table(), self.index.manifest)
        return lag.snapshots, lag.seconds

    def _model(self, asked: str | None, known: dict[str, int]) -> str:
        if asked is not None:
            return asked
        if len(known) == 1:
            return next(iter(known))
        raise QueryError(f"model is required: the index holds {sorted(known)}")

    def quick(self, request: SearchRequest, vector: np.ndarray | None) -> bool:
        """Whether a query is a graph walk of about a millisecond (a vector in the hot window), not a
        lookup by id or a scan of the table."""
        return (
            vector is not None
            and request.tier != "cold"
            and self.index.manifest.source_snapshot_id is not None
            and self.index.covers(request.since, request.until)
        )

    def search(
        self, request: SearchRequest, vector: np.ndarray | None = None
    ) -> tuple[list[dict[str, object]], str, int | None]:
        """Answer one query; `vector` is the request's vector as parsed by `parse` (None: by id)."""
        if vector is None and request.vector is not None:
            vector = parse_vector(request.vector)
        if (vector is None) == (request.id is None):
            raise QueryError("give exactly one of vector or id")
        if request.since and request.until and request.since >= request.until:
            raise QueryError(f"since ({request.since.isoformat()}) must be before until ({request.until.isoformat()})")
        index = self.index
        snapshot_id = index.manifest.source_snapshot_id
        tier = request.tier
        if tier == "auto":
            tier = "hot" if index.covers(request.since, request.until) else "cold"
        if tier == "hot" and snapshot_id is None:
            raise QueryError("the hot index is empty: run `nextesy sync` first", status=503)
        if tier == "hot" and not index.covers(request.since, request.until):
            raise QueryError(
                f"the time range reaches before the hot window, which starts {index.window_start.isoformat()}; "
                "use tier cold or auto"
            )
        known = index.models
        if tier == "cold":
            snapshot_id = self.cold.snapshot()
            if snapshot_id is None:
                raise QueryError("the table is empty: run `nextesy sync` first", status=503)
            if request.model is not None and request.model not in known and not self.cold.has_model(request.model):
                raise QueryError(f"unknown model {request.model!r}; known: {sorted(known)}", status=404)
        elif request.model is not None and request.model not in known:
            raise QueryError(f"unknown model {request.model!r}; known: {sorted(known)}", status=404)

        exclude = None
        if request.id is not None:
            found = index.lookup(request.id, request.model) if tier == "hot" else None
            if found is None:
                found = self.cold.lookup(request.id, request.model, snapshot_id)  # type: ignore[arg-type]
            if found is None:
                raise QueryError(f"no stored vector with id {request.id!r}", status=404)
            model, vector = found
            exclude = request.id
        else:
            model = self._model(request.model, known)
            bad = np.flatnonzero(~np.isfinite(vector))  # type: ignore[arg-type]
            if len(bad):
                raise QueryError(f"vector has non-finite values (NaN or Inf) at positions {bad[:10].tolist()}")
        dims = index.manifest.dims or self.settings.dims
        if len(vector) != dims:
            raise QueryError(f"vector has {len(vector)} values; model {model!r} has {dims}-d vectors")
        if not np.any(vector):
            raise QueryError("vector is all zeros: it has no direction to compare")
        assert vector is not None
        if tier == "hot":
            hits = index.search(vector, request.k, model, request.source, request.since, request.until, exclude)
        else:
            hits = self.cold.search(
                snapshot_id,
                vector,
                request.k,
                model,
                request.source,
                request.since,
                request.until,
                exclude,  # type: ignore[arg-type]
            )
        # `ts` stays a datetime: orjson writes it as isoformat() would, without a Python call per result.
        results = [{"id": h.id, "score": h.score, "ts": h.ts, "source": h.source} for h in hits]
        return results, tier, snapshot_id


def _document_search(app: FastAPI) -> None:
    """Describe POST /search in the OpenAPI schema, which lists only FastAPI's own routes."""
    generate = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("paths", {})["/search"] = {
                "post": {
                    "summary": "Similarity search",
                    "description": (SearchRequest.__doc__ or "").strip(),
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": SearchRequest.model_json_schema()}},
                    },
                    "responses": {"200": {"description": '{"results": [...], "tier": "hot"|"cold", "snapshot_id"}'}},
                }
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def parse_vector(value: object) -> np.ndarray:
    """A JSON list of numbers as float32, in one NumPy conversion (a model validating 768 floats one
    by one costs more than the graph walk of a small segment)."""
    array = np.asarray(value) if isinstance(value, list) else None
    if array is None or array.ndim != 1 or array.dtype.kind not in "fiu":
        raise QueryError("vector: must be a flat list of numbers")
    return array.astype(np.float32)


def parse(body: bytes) -> tuple[SearchRequest, np.ndarray | None]:
    """The request and its vector as float32, the small fields validated by the model.

    A body whose vector is a flat array of numbers (the usual request) has it read natively, straight
    to float32, not through a Python float per element and NumPy's pass over them (36 against 44 us
    for 768 values, bench/hot/request_cost.py); what is left is parsed as before, with the array
    replaced by null. Any other body is parsed whole here, so its errors are named as they always were.
    """
    found = native.object_vector(body)
    if found is not None:
        body = body[: found[1]] + b"null" + body[found[2] :]
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:  # the stdlib reads the bare NaN/Infinity some clients send; the vector check then names it
            raw = json.loads(body)
        except ValueError as exc:
            raise QueryError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise QueryError("request body must be a JSON object")
    vector = raw.pop("vector", None)
    try:
        request = SearchRequest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}" for error in exc.errors()
        )
        raise QueryError(problems) from None
    if found is not None:
        return request, found[0]
    return request, None if vector is None else parse_vector(vector)


def keep_staleness(settings: Settings, lag: object, stop: threading.Event, every_s: float = STALENESS_EVERY_S) -> None:
    """Measure how far the published index is behind the table into `lag`, every `every_s` until `stop`.

    A server of several workers runs this in its parent process, which answers no queries: reading the
    table's metadata means parsing one JSON document that lists every snapshot, about 30 ms for 2,000 (a
    week of 5-minute batches) with the GIL held, and in a worker every query in flight would wait for it
    at each scrape of /metrics. The workers serve the manifest's version within a second of its publication.
    """
    table = None
    while True:
        try:
            manifest = read_manifest(Path(settings.hot_dir))
            if manifest is not None:
                table = table or iceberg.embeddings_table(settings)
                measured = checks.staleness(table, manifest)
                lag[:] = [measured.snapshots, measured.seconds]  # type: ignore[index]
        except Exception:  # the table's store being down: the last measure stays, the next tick tries again
            pass
        if stop.wait(every_s):
            return


def _refresher(service: Service, stop: threading.Event, every_s: float = REFRESH_EVERY_S) -> None:
    # Loading a new segment is seconds of CPU (mapping the rows, reading the graph, collapsing it into huge
    # pages) on the core this worker serves from: at a lower priority it takes what the queries leave.
    with suppress(AttributeError, OSError):  # per thread on Linux; elsewhere it would lower the whole process
        if sys.platform.startswith("linux"):
            me = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, me, min(19, os.getpriority(os.PRIO_PROCESS, me) + REFRESH_NICENESS))
    while not stop.wait(every_s):
        try:
            service.index.refresh()
        except Exception:  # a half-written update is retried on the next tick; the old version keeps serving
            continue


class Balancer:
    """Evens out keep-alive connections among the worker processes.

    The kernel hands each new connection to a worker by a hash of its addresses (SO_REUSEPORT), so a
    few long-lived connections often split unevenly: with 8 clients and 2 workers, 6 against 2 about one
    time in four, and the busier worker's clients then wait on one core while the other idles. Each
    worker counts the clients it served in the last second and publishes the count in shared memory;
    a worker holding more than its even share answers one of them with `Connection: close`, and the
    client's next connection is handed out afresh. Requests are never refused, and a balanced server
    closes nothing.
    """

    WINDOW_S = 1.0

    def __init__(self, counts: object, number: int) -> None:
        self.counts = counts  # a multiprocessing.RawArray of ints, one per worker
        self.number = number
        self.seen: dict[object, float] = {}
        self.pruned = 0.0

    def shed(self, client: object) -> bool:
        """Note a request from `client`; whether its connection should close after this response."""
        now = time.monotonic()
        fresh = client not in self.seen
        self.seen[client] = now
        if now - self.pruned > self.WINDOW_S / 2:
            self.seen = {c: t for c, t in self.seen.items() if now - t < self.WINDOW_S}
            self.pruned = now
            fresh = True
        counts = self.counts
        if fresh:
            counts[self.number] = len(self.seen)  # type: ignore[index]
        total = sum(counts)  # type: ignore[call-overload]
        share = -(-total // len(counts))  # type: ignore[arg-type]
        if len(self.seen) <= share:
            return False
        del self.seen[client]
        counts[self.number] = len(self.seen)  # type: ignore[index]
        return True


class _Endpoint:
    """An ASGI callable as an object, so that a Starlette route takes it as an app of its own."""

    def __init__(self, call: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.call = call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.call(scope, receive, send)


class _App(FastAPI):
    """FastAPI, with POST /search sent straight to its endpoint, ahead of the middleware and the router.

    Nearly every request is a search, and those layers (the error and exception middleware, the exit-stack
    scope, the telemetry check, the route match) are Python work on every one of them; the endpoint answers
    its own errors (a QueryError as its 4xx, anything else as a 500 from uvicorn, which logs it, as the
    error middleware did). Every other request goes through FastAPI as before, including other methods on
    /search (405).
    """

    search: _Endpoint | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        search = self.search
        if search is not None and scope["type"] == "http" and scope["path"] == "/search" and scope["method"] == "POST":
            await search(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def _body(receive: Receive) -> bytes | None:
    """A request's whole body; None if the client disconnected first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def create_app(
    settings: Settings,
    refresh_every_s: float | None = REFRESH_EVERY_S,
    inline: bool = False,
    metrics_dir: Path | None = None,
    lag: object | None = None,
) -> FastAPI:
    """The FastAPI app; with `refresh_every_s`, a thread picks up each new index version as it is published.

    `inline`: hot vector queries run on the event loop itself (for a worker process that is one of
    several, see `serve`); lookups by id and cold queries still go to the thread pool.
    `metrics_dir`: the directory the worker processes of one server share their metrics through.
    `lag`: where the server's parent process keeps the index's staleness (`keep_staleness`); without it,
    /metrics measures it.
    """
    import faiss

    # One query is one graph walk: an OpenMP team per request only adds barrier waits when requests run
    # side by side on the threadpool (measured in bench/hot). Concurrency comes from the requests.
    faiss.omp_set_num_threads(1)
    service = Service(settings, metrics_dir, lag)

    # Searches run on as many threads as there are cores, not one per request: FAISS releases the GIL, so
    # two walks run side by side while the event loop parses the next requests, and eight concurrent
    # requests do not become eight threads thrashing two cores' caches (measured in bench/hot).
    # OpenMP's thread count is per calling thread, so each searcher sets its own.
    searchers = ThreadPoolExecutor(
        max_workers=os.cpu_count() or 1,
        thread_name_prefix="hot-search",
        initializer=faiss.omp_set_num_threads,
        initargs=(1,),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        thread = None
        if refresh_every_s:
            thread = threading.Thread(
                target=_refresher, args=(service, stop, refresh_every_s), daemon=True, name="hot-index-refresh"
            )
            thread.start()
        yield
        stop.set()
        if thread is not None:
            thread.join(timeout=5)
        searchers.shutdown(wait=False)
        service.cold.close()

    app = _App(title="nextesy hot tier", lifespan=lifespan)
    app.state.service = service

    async def search(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        body = await _body(receive)
        if body is None:  # the client went away
            return
        headers = [(b"content-type", b"application/json")]
        try:
            query, vector = parse(body)
            if inline and service.quick(query, vector):
                results, tier, snapshot_id = service.search(query, vector)
            else:
                loop = asyncio.get_running_loop()
                results, tier, snapshot_id = await loop.run_in_executor(searchers, service.search, query, vector)
        except QueryError as exc:
            service.metrics.requests.labels(tier="none", status=str(exc.status)).inc()
            status, payload = exc.status, orjson.dumps({"detail": str(exc)})
        else:
            service.metrics.observe(tier, time.perf_counter() - started)
            status, payload = 200, orjson.dumps({"results": results, "tier": tier, "snapshot_id": snapshot_id})
        balancer = getattr(app.state, "balancer", None)
        if balancer is not None and balancer.shed(scope.get("client")):
            service.metrics.rebalanced.inc()
            headers.append((b"connection", b"close"))
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    # The route nearly every request takes, as a plain ASGI endpoint: the body is parsed once, by `parse`,
    # not by FastAPI's dependency machinery (a tenth of a hot query's cost), and _App sends POSTs to it
    # ahead of the middleware and the router; the schema is still documented in the OpenAPI below.
    app.search = _Endpoint(search)
    app.router.routes.insert(0, Route("/search", app.search, methods=["POST"]))
    _document_search(app)

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        manifest = service.index.manifest
        return {
            "status": "ok",
            "snapshot_id": manifest.source_snapshot_id,
            "vectors": service.index.rows,
            "models": service.index.models,
            "window_start": service.index.window_start.isoformat() if manifest.source_snapshot_id else None,
            "index_version": manifest.version,
        }

    @app.get("/metrics")
    def metrics() -> Response:
        m = service.metrics
        m.vectors.set(service.index.rows)
        m.segments.set(len(service.index.segments))
        try:
            lag = service.staleness()
        except Exception:  # the table's store being down must not take the metrics endpoint with it
            lag = None
        if lag is not None:
            m.lag_snapshots.set(lag[0])
            m.lag_seconds.set(lag[1])
        return Response(m.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


UVICORN = {"log_level": "warning", "access_log": False, "http": "httptools", "loop": "uvloop"}


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Run the service: one process with a search thread pool, or `workers` processes forked after the
    index is loaded (sharing its pages), each answering hot queries on its own event loop.

    A process of its own per core takes the GIL out of the path: in one process, parsing, results and
    responses of every request queue for one lock while the searches run beside it (bench/hot). The
    workers listen on one port with SO_REUSEPORT, so the kernel spreads connections among them.
    """
    import gc

    import uvicorn

    if workers <= 1:
        app = create_app(settings)
        gc.freeze()  # what loading left behind lives as long as the server: no collection need walk it
        _announce(app, host, port)
        uvicorn.run(app, host=host, port=port, **UVICORN)  # type: ignore[arg-type]
        return
    metrics_dir = Path(tempfile.mkdtemp(prefix="nextesy-serve-metrics-"))
    try:
        lag = multiprocessing.RawArray("d", [math.nan, math.nan])  # kept here, read by the workers
        app = create_app(settings, inline=True, metrics_dir=metrics_dir, lag=lag)
        counts = multiprocessing.RawArray("i", workers)  # connections per worker, shared with the workers
        # Out of the collector's reach before the fork: a full collection walking the loaded objects takes
        # tens of milliseconds (a stall for every request in flight) and would copy the shared pages.
        gc.freeze()
        sockets = _listeners(host, port, workers)
        _announce(app, host, sockets[0].getsockname()[1], workers)
        children = []
        for number, mine in enumerate(sockets):
            pid = os.fork()
            if pid == 0:  # a worker: its own socket, its own event loop
                code = 1
                try:
                    app.state.balancer = Balancer(counts, number)
                    for other in sockets:
                        if other is not mine:
                            other.close()
                    uvicorn.Server(uvicorn.Config(app, **UVICORN)).run(sockets=[mine])  # type: ignore[arg-type]
                    code = 0
                finally:
                    os._exit(code)
            children.append(pid)
        for mine in sockets:
            mine.close()
        stop = threading.Event()  # a thread only now: a fork copies no threads
        threading.Thread(target=keep_staleness, args=(settings, lag, stop), daemon=True, name="staleness").start()
        try:
            _supervise(children)
        finally:
            stop.set()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _announce(app: FastAPI, host: str, port: int, workers: int = 1) -> None:
    import click

    index = app.state.service.index
    processes = f" ({workers} worker processes)" if workers > 1 else ""
    click.echo(
        f"serving {index.rows} vectors of snapshot {index.manifest.source_snapshot_id} "
        f"on http://{host}:{port}{processes}",
        err=True,
    )


def _listeners(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one address (port 0: the one the first is given)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]
        sock.listen(2048)
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets


def _supervise(children: list[int]) -> None:
    """Wait for the workers; a stop signal goes to all of them, and when one ends the others are stopped."""

    def stop(signum: int, frame: object) -> None:
        for pid in children:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    running, failed = set(children), False
    while running:
        pid, status = os.wait()
        running.discard(pid)
        failed = failed or os.waitstatus_to_exitcode(status) != 0
        stop(signal.SIGTERM, None)
    if failed:
        raise SystemExit(1)
