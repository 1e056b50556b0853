"""The cold tier's reads of the Iceberg table, answered in a child process of the serving worker.

A cold query is mostly Python holding the GIL: pyiceberg parses the table's metadata (every snapshot: about
30 ms at 2,000), plans the scan through its manifests, and Arrow's results are turned into hits. On the
demo's small table one cold query took 151 ms, 64 ms of which a thread beside it spent waiting for the GIL,
up to 12 ms at a time. In the worker that serves hot queries, every hot query in flight would wait that
long. `ColdProcess` sends each call to a process of its own (spawned on the first cold query, one per
worker), so a scan costs the hot queries a share of the cores, not their interpreter.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from .. import iceberg
from ..settings import Settings
from .search import Hit, QueryError, cold_lookup, cold_search

if TYPE_CHECKING:
    from pyiceberg.table import Table


class ColdTier:
    """The table's side of a cold query, in this process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._table: Table | None = None

    def table(self) -> Table:
        if self._table is None:
            self._table = iceberg.embeddings_table(self.settings)
        return self._table

    def snapshot(self) -> int | None:
        """The table's current snapshot id (read again now), or None for an empty table."""
        table = self.table()
        table.refresh()
        current = table.current_snapshot()
        return None if current is None else current.snapshot_id

    def has_model(self, model: str) -> bool:
        from pyiceberg.expressions import EqualTo

        scan = self.table().scan(row_filter=EqualTo("model", model), selected_fields=("id",), limit=1)
        return scan.to_arrow().num_rows > 0

    def lookup(self, id_: str, model: str | None, snapshot_id: int) -> tuple[str, np.ndarray] | None:
        return cold_lookup(self.table(), id_, model, snapshot_id)

    def search(
        self,
        snapshot_id: int,
        vector: np.ndarray,
        k: int,
        model: str,
        source: str | None,
        since: datetime | None,
        until: datetime | None,
        exclude_id: str | None,
    ) -> list[Hit]:
        return cold_search(self.table(), snapshot_id, vector, k, model, source, since, until, exclude_id)

    def close(self) -> None:
        """Nothing to let go of: the table is read in this process."""


log = logging.getLogger(__name__)
_tier: ColdTier | None = None  # the child process's own
PARENT_CHECK_EVERY_S = 1.0


def _start(settings: Settings, parent: int) -> None:
    global _tier
    _tier = ColdTier(settings)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="cold-parent-watch").start()


def _exit_with(parent: int) -> None:
    """End this process once its parent has: a worker stopped by a signal does not wait to shut its pool
    down, and a child blocked on the pool's queue would never notice (it holds that pipe's other end too)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_EVERY_S)
    os._exit(0)


def _call(method: str, args: tuple[object, ...]) -> object:
    assert _tier is not None
    return getattr(_tier, method)(*args)


class ColdProcess:
    """`ColdTier`'s calls, each answered by one child process (started on the first, one call at a time).

    The caller's thread waits for the answer without the GIL. A child that dies (out of memory on a huge
    scan, say) fails the calls in flight with a 503 and is started again for the next one; if the first
    child dies before it ever answers, the calls are answered in this process from then on (logged).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._answered = False  # whether a child ever answered
        self._fallback: ColdTier | None = None  # where calls go if no child could start

    def _pool_now(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn, not fork: a serving worker has threads, and a forked copy of their locks can hang.
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start,
                    initargs=(self.settings, os.getpid()),
                )
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Let a pool whose child died go; the next call starts another."""
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False)

    def _run(self, method: str, *args: object) -> object:
        if self._fallback is not None:
            return getattr(self._fallback, method)(*args)
        pool = self._pool_now()
        try:
            future = pool.submit(_call, method, args)
        except BrokenProcessPool:  # the child died before this query (a crash earlier): a new one answers it
            self._discard(pool)
            pool = self._pool_now()
            future = pool.submit(_call, method, args)
        try:
            answer = future.result()
        except BrokenProcessPool as exc:
            self._discard(pool)
            if self._answered:
                raise QueryError(f"the cold tier's process ended during the query ({exc}); try again", 503) from exc
            # It never answered: it cannot start here (say, a main script that runs the server on import,
            # with no `if __name__ == "__main__":`, which a spawned process imports again). Read in this one.
            log.warning("the cold tier's process did not start (%s); cold queries are read in the worker", exc)
            self._fallback = ColdTier(self.settings)
            return getattr(self._fallback, method)(*args)
        self._answered = True
        return answer

    def snapshot(self) -> int | None:
        return self._run("snapshot")  # type: ignore[return-value]

    def has_model(self, model: str) -> bool:
        return self._run("has_model", model)  # type: ignore[return-value]

    def lookup(self, id_: str, model: str | None, snapshot_id: int) -> tuple[str, np.ndarray] | None:
        return self._run("lookup", id_, model, snapshot_id)  # type: ignore[return-value]

    def search(self, *args: object) -> list[Hit]:
        """As `ColdTier.search`."""
        return self._run("search", *args)  # type: ignore[return-value]

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
