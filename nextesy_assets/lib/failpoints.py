"""Named crash points for recovery tests: `NEXTESY_FAILPOINTS=replica.before_commit` kills the process there.

A failpoint is read when it is reached (never at import) and does nothing unless named, so production runs
pay one environment lookup. `name:N` fires on the N-th time the point is reached (1-based).
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

VARIABLE = "NEXTESY_FAILPOINTS"
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
        point, _, nth = entry.strip().partition(":")
        if point == name and reached == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
