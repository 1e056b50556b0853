"""Batches: one per landing file, with a stable id and a registration record in storage."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass

import orjson

from . import storage
from .errors import BatchNotFoundError, UnsupportedFormatError
from .settings import Settings

# Suffix -> format name. Longest suffixes first so `.jsonl.gz` wins over `.gz`.
FORMATS: dict[str, str] = {
    ".jsonl.gz": "jsonl.gz",
    ".ndjson.gz": "jsonl.gz",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def detect_format(key: str) -> str:
    """The format of a landing file from its name, or UnsupportedFormatError naming the file."""
    lower = key.lower()
    for suffix, name in FORMATS.items():
        if lower.endswith(suffix):
            return name
    raise UnsupportedFormatError(f"unsupported landing file {key!r}: expected one of {', '.join(sorted(FORMATS))}")


def is_supported(key: str) -> bool:
    try:
        detect_format(key)
    except UnsupportedFormatError:
        return False
    return True


def batch_id_for(key: str, etag: str) -> str:
    """A stable batch id: readable stem of the file name + a hash of its key and ETag.

    The same object gives the same id on every listing; rewriting the object (new ETag) gives a new one.
    """
    name = key.rsplit("/", 1)[-1]
    for suffix in FORMATS:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    stem = _UNSAFE.sub("_", name).strip("_.-")[:48] or "batch"
    digest = hashlib.sha256(f"{key}\n{etag}".encode()).hexdigest()[:12]
    return f"{stem}-{digest}"


@dataclass(frozen=True)
class BatchRegistration:
    """What a batch id stands for: the landing object it was derived from."""

    batch_id: str
    landing_uri: str
    key: str
    etag: str
    size: int
    format: str

    @property
    def uri(self) -> str:
        return storage.join(self.landing_uri, self.key)


def registration_uri(settings: Settings, batch_id: str) -> str:
    return storage.join(settings.batches_uri, batch_id, "registration.json")


def register(settings: Settings, obj: storage.ObjectInfo) -> BatchRegistration:
    """Record which landing object a batch id stands for (idempotent: same object, same record)."""
    registration = BatchRegistration(
        batch_id=batch_id_for(obj.key, obj.etag),
        landing_uri=settings.landing_uri,
        key=obj.key,
        etag=obj.etag,
        size=obj.size,
        format=detect_format(obj.key),
    )
    uri = registration_uri(settings, registration.batch_id)
    if not storage.exists(uri):
        storage.write_bytes(uri, orjson.dumps(asdict(registration), option=orjson.OPT_INDENT_2))
    return registration


def lookup(settings: Settings, batch_id: str) -> BatchRegistration:
    uri = registration_uri(settings, batch_id)
    try:
        data = orjson.loads(storage.read_bytes(uri))
    except FileNotFoundError:
        raise BatchNotFoundError(
            f"batch {batch_id=} is not registered (no {uri}); batches are registered by "
            "landing_sensor or `nextesy sync`"
        ) from None
    return BatchRegistration(**data)
