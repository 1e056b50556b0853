"""Named crash points for recovery tests: `NEXTESY_FAILPOINTS=replica.before_commit` kills the process there.

A failpoint is read when it is reached (never at import) and does nothing unless named, so production runs
pay one environment lookup. `name:N` fires on the N-th time the point is reached (1-based). `name:N=pause`
stops the thread there instead, after writing the process id to the file `NEXTESY_FAILPOINTS_PAUSED`
names, so a test can kill a process it did not start itself (a Dagster run worker) at a known point.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

VARIABLE = "NEXTESY_FAILPOINTS"
PAUSED_VARIABLE = "NEXTESY_FAILPOINTS_PAUSED"
_hits: Counter[str] = Counter()
_lock = threading.Lock()  # points are reached from copy threads too: count each reach exactly once


def hit(name: str) -> None:
    """SIGKILL this process if `name` is armed: the hardest crash, no cleanup, no finally blocks."""
    armed = os.environ.get(VARIABLE)
    if not armed:
        return
    with _lock:
        _hits[name] += 1
        reached = _hits[name]
    for entry in armed.split(","):
        spec, _, action = entry.strip().partition("=")
        point, _, nth = spec.partition(":")
        if point == name and reached == int(nth or 1):
            if action == "pause":
                _pause()
            os.kill(os.getpid(), signal.SIGKILL)


def _pause() -> None:
    marker = os.environ.get(PAUSED_VARIABLE)
    if marker:
        with open(f"{marker}.tmp", "w") as out:
            out.write(str(os.getpid()))
        os.replace(f"{marker}.tmp", marker)
    while True:  # until killed
        time.sleep(3600)
