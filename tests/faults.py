"""A fault-injecting TCP proxy for the stand-ins: connection resets, HTTP 503 SlowDown, HTTP 500, stalls.

Faults are planned per new connection (clients reconnect after a failed one), so a test says exactly how
many connections fail and how. With nothing planned the proxy forwards bytes both ways untouched; in
`down` mode every connection is reset, as a store that stays unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
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


@dataclass
class FaultProxy:
    upstream_host: str
    upstream_port: int
    planned: deque[str] = field(default_factory=deque)
    down: bool = False
    stall_s: float = 2.0
    injected: list[str] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    # ---- control -------------------------------------------------------------------------------------------
    def plan(self, *faults: str) -> None:
        """Faults for the next connections, in order: reset, slowdown, error500, stall."""
        self.planned.extend(faults)

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
        fault = "reset" if self.down else (self.planned.popleft() if self.planned else None)
        if fault:
            self.injected.append(fault)
        try:
            if fault == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.close()
                return
            if fault in ("slowdown", "error500"):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(SLOW_DOWN if fault == "slowdown" else SERVER_ERROR)
                await writer.drain()
                writer.close()
                return
            if fault == "stall":
                await asyncio.sleep(self.stall_s)
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        finally:
            with contextlib.suppress(Exception):
                sink.close()
