"""Object storage behind one small interface: local directories, s3:// and gs:// as pyarrow filesystems.

Every store client gets explicit connect and read timeouts (`timeouts.py`): S3 through pyarrow's
S3FileSystem and boto3, GCS through google-cloud-storage (`gcs.py`; pyarrow's own GCS client has none).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import urlparse

import pyarrow.fs as pafs

from .breaker import BREAKER, store_of
from .errors import ConfigurationError
from .timeouts import StoreTimeouts


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object. `key` is relative to the prefix it was listed under."""

    key: str
    uri: str
    size: int
    etag: str
    modified: datetime | None = None  # last write, UTC, as the store reports it


def gcs_emulator() -> str | None:
    """`STORAGE_EMULATOR_HOST` (the variable Google's clients honour), as a URL, or None on real GCS."""
    host = os.environ.get("STORAGE_EMULATOR_HOST")
    if not host:
        return None
    return host if "://" in host else f"http://{host}"


@lru_cache(maxsize=8)
def _filesystem(scheme: str, endpoint: str | None, timeouts: StoreTimeouts) -> pafs.FileSystem:
    if scheme in ("", "file"):
        return pafs.LocalFileSystem()
    if scheme in ("s3", "s3a"):
        # Credentials come from the standard AWS chain; endpoint and region from the standard variables.
        # request_timeout is curl's low-speed limit in the AWS SDK: a response silent that long fails and is retried.
        options: dict[str, object] = {
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=5),
            "connect_timeout": timeouts.connect_s,
            "request_timeout": timeouts.read_s,
        }
        if endpoint:
            parsed = urlparse(endpoint)
            options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
        if region := os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"):
            options["region"] = region
        return pafs.S3FileSystem(**options)
    if scheme in ("gs", "gcs"):
        from .gcs import gcs_filesystem

        return gcs_filesystem(gcs_client(), timeouts)
    raise ConfigurationError(f"unsupported storage scheme {scheme!r}; use a local path, s3:// or gs://")


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding `uri` and the path inside it (`bucket/key` for object stores)."""
    if "://" not in uri:
        return _filesystem("", None, StoreTimeouts()), uri
    scheme, rest = uri.split("://", 1)
    if scheme == "file":
        return _filesystem("", None, StoreTimeouts()), "/" + rest.lstrip("/")
    return filesystem_for(scheme), rest


def filesystem_for(scheme: str) -> pafs.FileSystem:
    """The filesystem of an object store scheme, configured from the standard variables and the timeouts."""
    endpoint = gcs_emulator() if scheme in ("gs", "gcs") else os.environ.get("AWS_ENDPOINT_URL")
    return _filesystem(scheme, endpoint, StoreTimeouts.from_env())


def fileio_properties(uri: str) -> dict[str, str]:
    """pyiceberg FileIO properties for the embedded catalogs, from the same standard variables."""
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    properties: dict[str, str] = {}
    if scheme in ("s3", "s3a"):
        timeouts = StoreTimeouts.from_env()
        properties["s3.connect-timeout"] = str(timeouts.connect_s)
        properties["s3.request-timeout"] = str(timeouts.read_s)
        for variable, key in (
            ("AWS_ENDPOINT_URL", "s3.endpoint"),
            ("AWS_REGION", "s3.region"),
            ("AWS_ACCESS_KEY_ID", "s3.access-key-id"),
            ("AWS_SECRET_ACCESS_KEY", "s3.secret-access-key"),
            ("AWS_SESSION_TOKEN", "s3.session-token"),
        ):
            if value := os.environ.get(variable):
                properties[key] = value
    return properties


# pyiceberg's FileIO for the embedded catalogs: the same GCS client as the transfers, timeouts included.
FILE_IO_IMPL = "nextesy_assets.lib.fileio.NextesyFileIO"


def join(uri: str, *parts: str) -> str:
    return posixpath.join(uri, *parts)


def read_bytes(uri: str) -> bytes:
    return BREAKER.call(store_of(uri), lambda: _read_bytes(uri))


def _read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    with fs.open_input_stream(path, compression=None) as stream:
        return stream.read()


def ensure_parent(fs: pafs.FileSystem, path: str) -> None:
    """Create the parent directory on a local filesystem; object stores have none (and would get marker objects)."""
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(posixpath.dirname(path), recursive=True)


def write_bytes(uri: str, data: bytes) -> None:
    return BREAKER.call(store_of(uri), lambda: _write_bytes(uri, data))


def _write_bytes(uri: str, data: bytes) -> None:
    fs, path = resolve(uri)
    ensure_parent(fs, path)
    with fs.open_output_stream(path, compression=None) as stream:
        stream.write(data)


def local_path(uri: str) -> str | None:
    """The path of `uri` on this machine's filesystem, or None for an object store."""
    fs, path = resolve(uri)
    return path if isinstance(fs, pafs.LocalFileSystem) else None


_TRANSFER_CHUNK = 8 * 1024 * 1024


def download(uri: str, dest: str) -> int:
    """Stream `uri` into the local file `dest` (bounded memory, bytes as stored); returns the size."""
    return BREAKER.call(store_of(uri), lambda: _download(uri, dest))


def _download(uri: str, dest: str) -> int:
    fs, path = resolve(uri)
    size = 0
    with fs.open_input_stream(path, compression=None) as source, open(dest, "wb") as target:
        while chunk := source.read(_TRANSFER_CHUNK):
            target.write(chunk)
            size += len(chunk)
    return size


def upload(src: str, uri: str) -> None:
    """Stream the local file `src` to `uri`."""
    BREAKER.call(store_of(uri), lambda: _upload(src, uri))


def _upload(src: str, uri: str) -> None:
    fs, path = resolve(uri)
    ensure_parent(fs, path)
    with open(src, "rb") as source, fs.open_output_stream(path, compression=None) as target:
        while chunk := source.read(_TRANSFER_CHUNK):
            target.write(chunk)


def exists(uri: str) -> bool:
    return BREAKER.call(store_of(uri), lambda: _exists(uri))


def _exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type == pafs.FileType.File


def delete(uri: str) -> None:
    return BREAKER.call(store_of(uri), lambda: _delete(uri))


def _delete(uri: str) -> None:
    fs, path = resolve(uri)
    fs.delete_file(path)


def stat(uri: str) -> ObjectInfo:
    return BREAKER.call(store_of(uri), lambda: _stat(uri))


def _stat(uri: str) -> ObjectInfo:
    """Size and ETag of one object (the store's own ETag on S3, as listings report it)."""
    if uri.startswith(("s3://", "s3a://")):
        bucket, _, key = uri.split("://", 1)[1].partition("/")
        try:
            head = s3_client().head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise FileNotFoundError(uri) from None
            raise
        return ObjectInfo(
            key=posixpath.basename(key), uri=uri, size=int(head["ContentLength"]), etag=head["ETag"].strip('"')
        )
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(uri)
    return ObjectInfo(key=posixpath.basename(path), uri=uri, size=info.size, etag=_etag(info))


def _etag(info: pafs.FileInfo) -> str:
    # pyarrow exposes no store ETag; size plus modification time changes whenever the content is
    # rewritten, like the ETag a web server derives for a local file.
    return f"{info.size:x}-{info.mtime_ns or 0:x}"


def list_objects(prefix_uri: str, start_after: str = "", page_size: int = 1000) -> Iterator[list[ObjectInfo]]:
    """Pages of the objects under `prefix_uri`, in key order, whose key sorts after `start_after`.

    On S3 each page is one ListObjectsV2 call (StartAfter, the store's ETag); elsewhere the listing
    is read whole and paged here, with size and modification time standing in for an ETag.
    """
    if prefix_uri.startswith(("s3://", "s3a://")):
        pages = _list_s3(prefix_uri, start_after, page_size)
        while True:
            page = BREAKER.call(store_of(prefix_uri), lambda: next(pages, None))
            if page is None:
                return
            yield page
    fs, root = resolve(prefix_uri)
    infos = BREAKER.call(
        store_of(prefix_uri), lambda: fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    )
    objects = sorted(
        (
            ObjectInfo(
                key=posixpath.relpath(info.path, root),
                uri=join(prefix_uri, posixpath.relpath(info.path, root)),
                size=info.size,
                etag=_etag(info),
                modified=_utc(info.mtime),
            )
            for info in infos
            if info.type == pafs.FileType.File
        ),
        key=lambda o: o.key,
    )
    objects = [o for o in objects if o.key > start_after]
    for start in range(0, len(objects), page_size):
        yield objects[start : start + page_size]


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def s3_client():  # type: ignore[no-untyped-def]
    """A boto3 S3 client from the standard AWS chain (AWS_ENDPOINT_URL, AWS_REGION, credentials)."""
    import boto3
    from botocore.config import Config

    timeouts = StoreTimeouts.from_env()
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 5},
        connect_timeout=timeouts.connect_s,
        read_timeout=timeouts.read_s,
    )
    return boto3.client("s3", config=config)


def _list_s3(prefix_uri: str, start_after: str, page_size: int) -> Iterator[list[ObjectInfo]]:
    bucket, _, prefix = prefix_uri.split("://", 1)[1].partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    client = s3_client()
    kwargs = {"Bucket": bucket, "Prefix": prefix, "PaginationConfig": {"PageSize": page_size}}
    if start_after:
        kwargs["StartAfter"] = prefix + start_after
    for page in client.get_paginator("list_objects_v2").paginate(**kwargs):
        objects = [
            ObjectInfo(
                key=item["Key"][len(prefix) :],
                uri=f"{prefix_uri.rstrip('/')}/{item['Key'][len(prefix) :]}",
                size=int(item["Size"]),
                etag=item["ETag"].strip('"'),
                modified=_utc(item.get("LastModified")),
            )
            for item in page.get("Contents", [])
            if not item["Key"].endswith("/")
        ]
        if objects:
            yield objects


def gcs_client():  # type: ignore[no-untyped-def]
    """A google-cloud-storage client: anonymous against an emulator, default credentials otherwise."""
    return _gcs_client(gcs_emulator())


@lru_cache(maxsize=8)
def _gcs_client(emulator: str | None):  # type: ignore[no-untyped-def]
    from google.cloud import storage as gcs

    if emulator:
        from google.auth.credentials import AnonymousCredentials

        return gcs.Client(
            project="nextesy-emulator",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": emulator},
        )
    return gcs.Client()


def crc32c(uri: str) -> int:
    return BREAKER.call(store_of(uri), lambda: _crc32c(uri))


def _crc32c(uri: str) -> int:
    """CRC32C of an object's bytes: as GCS reports it for gs:// (no download), else computed while streaming."""
    fs, path = resolve(uri)
    if uri.startswith(("gs://", "gcs://")):
        return fs.handler.crc32c(path)  # type: ignore[attr-defined]
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with fs.open_input_stream(path, compression=None) as stream:
        while chunk := stream.read(8 * 1024 * 1024):
            checksum.update(chunk)
    return int.from_bytes(checksum.digest(), "big")
