"""How long a store may take: connect and read timeouts for every storage client, from the environment.

Without a read timeout a response that stops halfway (a dead peer, a half-open connection) leaves a read
waiting forever; with one, the read fails, the client retries it, and the breaker counts it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ConfigurationError

CONNECT_TIMEOUT_VAR = "NEXTESY_STORE_CONNECT_TIMEOUT_S"
READ_TIMEOUT_VAR = "NEXTESY_STORE_READ_TIMEOUT_S"
RETRY_DEADLINE_VAR = "NEXTESY_STORE_RETRY_DEADLINE_S"
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 60.0
DEFAULT_RETRY_DEADLINE_S = 120.0


@dataclass(frozen=True)
class StoreTimeouts:
    """Attributes:
    connect_s: Seconds to open a connection to a store.
    read_s: Seconds a request may go without receiving a byte (a stalled or cut-short response).
    retry_deadline_s: Seconds a GCS call keeps retrying before it gives up (S3 counts attempts instead).
    """

    connect_s: float = DEFAULT_CONNECT_TIMEOUT_S
    read_s: float = DEFAULT_READ_TIMEOUT_S
    retry_deadline_s: float = DEFAULT_RETRY_DEADLINE_S

    @property
    def pair(self) -> tuple[float, float]:
        """(connect, read), as requests and google-cloud-storage take it."""
        return (self.connect_s, self.read_s)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StoreTimeouts:
        env = os.environ if env is None else env
        values: dict[str, float] = {}
        for field, variable in (
            ("connect_s", CONNECT_TIMEOUT_VAR),
            ("read_s", READ_TIMEOUT_VAR),
            ("retry_deadline_s", RETRY_DEADLINE_VAR),
        ):
            raw = env.get(variable)
            if not raw:
                continue
            try:
                number = float(raw)
            except ValueError:
                raise ConfigurationError(f"{variable} must be a number of seconds, got {raw!r}") from None
            if not number > 0:
                raise ConfigurationError(f"{variable} must be positive, got {raw!r}")
            values[field] = number
        return cls(**values)
