"""Finding new batches in the landing zone, page by page, inside a time budget."""

from __future__ import annotations

import time
from collections.abc import Callable, Container
from dataclasses import dataclass, field

from . import storage
from .batches import BatchRegistration, batch_id_for, is_sidecar, is_supported, register
from .settings import Settings


@dataclass
class LandingScan:
    """One pass (or part of a pass) over the landing prefix."""

    new: list[BatchRegistration] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    listed: int = 0
    pages: int = 0
    last_key: str = ""
    complete: bool = False


def scan(
    settings: Settings,
    *,
    known: Container[str] = frozenset(),
    start_after: str = "",
    page_size: int = 1000,
    max_pages: int | None = None,
    time_budget_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> LandingScan:
    """List landing objects after `start_after`, register the supported ones whose batch id is not in
    `known`, and stop early after `max_pages` pages or `time_budget_s` seconds.

    `complete` says whether the listing reached the end of the prefix; `last_key` is where to resume.
    """
    result = LandingScan()
    deadline = None if time_budget_s is None else clock() + time_budget_s
    pages = storage.list_objects(settings.landing_uri, start_after=start_after, page_size=page_size)
    for page in pages:
        result.pages += 1
        for obj in page:
            result.listed += 1
            result.last_key = obj.key
            if is_sidecar(obj.key):
                continue  # read with its NPY file
            if not is_supported(obj.key):
                result.unsupported.append(obj.key)
            elif batch_id_for(obj.key, obj.etag) not in known:
                result.new.append(register(settings, obj))
        out_of_pages = max_pages is not None and result.pages >= max_pages
        out_of_time = deadline is not None and clock() >= deadline
        if out_of_pages or out_of_time:
            # Ended early: the listing is complete only if nothing follows the last key.
            result.complete = next(iter(pages), None) is None
            return result
    result.complete = True
    return result
