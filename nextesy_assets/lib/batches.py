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
    ".csv": "csv",
    ".npy": "npy",
    ".parquet": "parquet",
}

# The metadata of `<stem>.npy` lives in `<stem>.meta.jsonl` or `<stem>.meta.parquet`: part of the
# NPY batch, never a batch of its own.
SIDECAR_SUFFIXES = (".meta.jsonl", ".meta.parquet")


def is_sidecar(key: str) -> bool:
    return key.lower().endswith(SIDECAR_SUFFIXES)


def sidecar_keys(npy_key: str) -> list[str]:
    """The keys an NPY file's sidecar may have, in the order they are tried."""
    stem = npy_key[: -len(".npy")]
    return [stem + suffix for suffix in SIDECAR_SUFFIXES]


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
    sidecar_key: str | None = None  # NPY only: the metadata file, part of the batch
    sidecar_etag: str | None = None

    @property
    def uri(self) -> str:
        return storage.join(self.landing_uri, self.key)

    @property
    def sidecar_uri(self) -> str | None:
        return None if self.sidecar_key is None else storage.join(self.landing_uri, self.sidecar_key)


def registration_uri(settings: Settings, batch_id: str) -> str:
    return storage.join(settings.batches_uri, batch_id, "registration.json")


def register(settings: Settings, obj: storage.ObjectInfo) -> BatchRegistration:
    """Record which landing object a batch id stands for (idempotent: same object, same record).

    An NPY file's sidecar is found now (it must be uploaded before the NPY file) and is checked for
    changes when the batch is converted.
    """
    fmt = detect_format(obj.key)
    sidecar_key = sidecar_etag = None
    if fmt == "npy":
        for key in sidecar_keys(obj.key):
            uri = storage.join(settings.landing_uri, key)
            if storage.exists(uri):
                sidecar_key, sidecar_etag = key, storage.stat(uri).etag
                break
    registration = BatchRegistration(
        batch_id=batch_id_for(obj.key, obj.etag),
        landing_uri=settings.landing_uri,
        key=obj.key,
        etag=obj.etag,
        size=obj.size,
        format=fmt,
        sidecar_key=sidecar_key,
        sidecar_etag=sidecar_etag,
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
