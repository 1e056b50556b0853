"""A fault-injecting HTTP proxy for the stand-ins: resets, 500/503 answers, stalls, and bodies cut short or slowed.

Two kinds of fault, planned in order with `plan(...)`:

- connection faults hit the next new connection (clients reconnect after a failed one), before the store
  sees a byte of the request: `reset`, `slowdown` (S3's 503 SlowDown), `error500`, `error503` (GCS's JSON
  503), `stall` (the request reaches the store `stall_s` late);
- body faults hit the next response to a GET that carries a body of at least `min_body` bytes:
  `truncate` (half the body, then the connection closes), `hang` (half the body, then nothing, the
  connection left open: only a client read timeout ends it), `slow` (the whole body, `slow_chunk` bytes
  every `slow_delay_s`). Only downloads get them, so no write the store applied has its answer lost (the
  fault fake-gcs-server mishandles on resumable uploads, see LOCAL-RIG).

With nothing planned the proxy forwards every byte untouched; in `down` mode every connection is reset, as
a store that stays unreachable. `injected` lists the faults that really hit a request, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import threading
from collections import deque
from dataclasses import dataclass, field

SLOW_DOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\nContent-Length: 133\r\n\r\n"
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.'
    b"</Message></Error>"
)
SERVER_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: 14\r\n\r\ninternal error"
)
_UNAVAILABLE_BODY = b'{"error": {"code": 503, "message": "Backend Error", "errors": [{"reason": "backendError"}]}}'
UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
    + f"Content-Length: {len(_UNAVAILABLE_BODY)}\r\n\r\n".encode()
    + _UNAVAILABLE_BODY
)
CONNECTION_FAULTS = frozenset({"reset", "slowdown", "error500", "error503", "stall"})
BODY_FAULTS = frozenset({"truncate", "hang", "slow"})
_ANSWERS = {"slowdown": SLOW_DOWN, "error500": SERVER_ERROR, "error503": UNAVAILABLE}
_HANG_LIMIT_S = 600.0  # longer than any test may take: a client without a read timeout fails its test


@dataclass
class FaultProxy:
    upstream_host: str
    upstream_port: int
    down: bool = False
    stall_s: float = 2.0
    min_body: int = 256
    slow_chunk: int = 1024
    slow_delay_s: float = 0.01
    injected: list[str] = field(default_factory=list)
    hit_requests: list[str] = field(default_factory=list)  # "fault METHOD target" of each body fault
    connections: int = 0

    def __post_init__(self) -> None:
        self._connection_faults: deque[str] = deque()
        self._body_faults: deque[tuple[str, re.Pattern[str] | None]] = deque()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    # ---- control -------------------------------------------------------------------------------------------
    def plan(self, *faults: str) -> None:
        """Faults for the next connections (connection faults) or GET responses (body faults), in order.

        A body fault may name the requests it waits for: `hang@metadata\\.json` hits the next GET whose
        request line matches the regular expression after the `@`.
        """
        with self._lock:
            for entry in faults:
                fault, _, target = entry.partition("@")
                if fault in CONNECTION_FAULTS and not target:
                    self._connection_faults.append(fault)
                elif fault in BODY_FAULTS:
                    self._body_faults.append((entry, re.compile(target) if target else None))
                else:
                    raise ValueError(f"unknown fault {entry!r}; one of {sorted(CONNECTION_FAULTS | BODY_FAULTS)}")

    @property
    def pending(self) -> list[str]:
        with self._lock:
            return [*self._connection_faults, *(entry for entry, _ in self._body_faults)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _take_connection_fault(self) -> str | None:
        with self._lock:
            if self.down:
                self.injected.append("reset")
                return "reset"
            if not self._connection_faults:
                return None
            fault = self._connection_faults.popleft()
            self.injected.append(fault)
            return fault

    def _take_body_fault(self, request: str) -> str | None:
        with self._lock:
            if not self._body_faults:
                return None
            entry, target = self._body_faults[0]
            if target is not None and not target.search(request):
                return None
            self._body_faults.popleft()
            self.injected.append(entry)
            self.hit_requests.append(f"{entry} {request}")
            return entry.partition("@")[0]

    # ---- proxy ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(asyncio.sleep(0.05))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        fault = self._take_connection_fault()
        up_writer: asyncio.StreamWriter | None = None
        try:
            if fault == "reset":
                _reset(writer)
                return
            if fault in _ANSWERS:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(_ANSWERS[fault])
                await writer.drain()
                writer.close()
                return
            if fault == "stall":
                await asyncio.sleep(self.stall_s)
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
            requests_seen: asyncio.Queue[str] = asyncio.Queue()
            requests = asyncio.ensure_future(self._relay_requests(reader, up_writer, requests_seen, writer))
            responses = asyncio.ensure_future(self._relay_responses(up_reader, writer, requests_seen))
            # Either side ending ends the exchange: the client gave up, or the proxy cut the response.
            _, still = await asyncio.wait({requests, responses}, return_when=asyncio.FIRST_COMPLETED)
            if requests.done() and not responses.done():
                # The client finished sending (or left): let the answer in flight finish, within reason.
                await asyncio.wait(still, timeout=_HANG_LIMIT_S)
            for task in still:
                task.cancel()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        except asyncio.CancelledError:  # the proxy is stopping
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()

    async def _relay_requests(
        self,
        reader: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        seen: asyncio.Queue[str],
        writer: asyncio.StreamWriter,
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, OSError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if self.down:  # a store that went down drops the connections it had, too
                    _reset(sink)
                    _reset(writer)
                    return
                # Queued before the store can see it, so its answer always finds its request line waiting.
                seen.put_nowait(head.split(b"\r\n", 1)[0].decode("latin-1").rsplit(" ", 1)[0])
                sink.write(head)
                await _relay_body(reader, sink, _headers(head), response=False)
                await sink.drain()

    async def _relay_responses(
        self, source: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: asyncio.Queue[str]
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, OSError):
            while True:
                head = await source.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                if 100 <= status < 200:  # 100 Continue: the answer proper follows
                    writer.write(head)
                    await writer.drain()
                    continue
                request = seen.get_nowait() if not seen.empty() else ""
                method = request.split(" ", 1)[0]
                headers = _headers(head)
                writer.write(head)
                if method == "HEAD" or status in (204, 304):
                    await writer.drain()
                    continue
                length = _content_length(headers)
                fault = None
                if method == "GET" and status in (200, 206) and length is not None and length >= self.min_body:
                    fault = self._take_body_fault(request)
                if fault is None or length is None:
                    await _relay_body(source, writer, headers, response=True)
                    await writer.drain()
                    continue
                if fault == "slow":
                    remaining = length
                    while remaining:
                        data = await source.readexactly(min(self.slow_chunk, remaining))
                        writer.write(data)
                        await writer.drain()
                        remaining -= len(data)
                        await asyncio.sleep(self.slow_delay_s)
                    continue
                writer.write(await source.readexactly(length // 2))
                await writer.drain()
                if fault == "hang":
                    await asyncio.sleep(_HANG_LIMIT_S)
                return  # truncate: the connection closes with the body half sent


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


def _headers(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _content_length(headers: dict[str, str]) -> int | None:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return None
    value = headers.get("content-length")
    return int(value) if value is not None else None


async def _relay_body(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, headers: dict[str, str], *, response: bool
) -> None:
    """Forward one message body: chunked, by Content-Length, or (a response with neither) until the close."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await source.readuntil(b"\r\n")
            sink.write(size_line)
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (line := await source.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    sink.write(line)
                sink.write(b"\r\n")
                return
            sink.write(await source.readexactly(size + 2))
            await sink.drain()
    length = _content_length(headers)
    if length is None:
        if response:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        return
    remaining = length
    while remaining:
        data = await source.read(min(remaining, 65536))
        if not data:
            raise asyncio.IncompleteReadError(b"", remaining)
        sink.write(data)
        await sink.drain()
        remaining -= len(data)
