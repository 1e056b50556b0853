"""A circuit breaker per object store: when a store keeps failing, stop calling it and fail the run fast.

Retries (the clients' own, and Dagster's RetryPolicy) ride out a blip; a store that stays down would
otherwise make every step wait out every retry. After `threshold` consecutive failures the breaker opens
and calls fail at once with StoreUnavailableError, a terminal error that Dagster does not retry, until
`cooldown_s` have passed; then one call is let through to probe the store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import TerminalError

T = TypeVar("T")


class StoreUnavailableError(TerminalError):
    """A store failed repeatedly; the breaker is open and calls fail fast."""


@dataclass
class _State:
    failures: int = 0
    opened_at: float | None = None
    last_error: str = ""


class CircuitBreaker:
    def __init__(
        self, threshold: int = 5, cooldown_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()

    def call(self, store: str, operation: Callable[[], T]) -> T:
        with self._lock:
            state = self._states.setdefault(store, _State())
            if state.opened_at is not None and self.clock() - state.opened_at < self.cooldown_s:
                raise StoreUnavailableError(
                    f"store {store} is unavailable: {state.failures} consecutive failures, last: {state.last_error}; "
                    f"not calling it again for {self.cooldown_s:.0f} s"
                )
        try:
            result = operation()
        except Exception as exc:
            if not is_store_failure(exc) or _counted(exc):
                raise
            exc._nextesy_breaker_counted = True  # type: ignore[attr-defined]
            with self._lock:
                state.failures += 1
                state.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if state.failures >= self.threshold:
                    state.opened_at = self.clock()
            raise
        with self._lock:
            state.failures, state.opened_at = 0, None
        return result

    def reset(self) -> None:
        with self._lock:
            self._states.clear()


def _counted(exc: BaseException) -> bool:
    """Whether a call nested inside this one (an attempt inside a retried call) already counted this failure."""
    return any(getattr(e, "_nextesy_breaker_counted", False) for e in (exc, exc.__cause__) if e is not None)


_CLIENT_FAILURES = frozenset(
    {
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "ServiceUnavailable",
        "InternalServerError",
        "BadGateway",
        "GatewayTimeout",
        "TooManyRequests",
        "RetryError",  # google-api-core: retries ran out on one of the failures above
    }
)


def is_store_failure(exc: BaseException) -> bool:
    """Whether an error says the store is failing (down, erroring, throttling), not that the request was wrong."""
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
        return False  # answers, not failures
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    if type(exc).__name__ in _CLIENT_FAILURES:
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return bool(status >= 500 or response.get("Error", {}).get("Code") in ("SlowDown", "Throttling"))
    return False


BREAKER = CircuitBreaker()


def store_of(uri: str) -> str:
    """The store a URI lives in: scheme and bucket (`s3://landing-bucket`), or `local`."""
    if "://" not in uri or uri.startswith("file://"):
        return "local"
    scheme, rest = uri.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"
