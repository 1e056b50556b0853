"""GCS as a pyarrow filesystem over google-cloud-storage, with explicit timeouts on every request.

pyarrow's own GcsFileSystem (google-cloud-cpp) takes no read timeout: a response that stops halfway
leaves a read waiting. Here every request carries a (connect, read) timeout; a timeout, a reset, a body
shorter than announced or a 408/429/5xx answer is retried with exponential backoff and jitter
(google-api-core's Retry, with google-cloud-storage's own predicate). Each attempt goes through the
store's circuit breaker, so a store that stays down fails fast instead of wearing out every retry.
Wrapped in `pyarrow.fs.PyFileSystem`, this serves Nextesy's transfers and pyiceberg's FileIO alike
(`fileio.py`).
"""

from __future__ import annotations

import base64
import io
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs

from .breaker import BREAKER
from .timeouts import StoreTimeouts

if TYPE_CHECKING:
    from google.api_core.retry import Retry
    from google.cloud.storage import Blob, Client

T = TypeVar("T")

_CHUNK = 8 * 1024 * 1024  # ranged reads, and the largest upload sent in one request (larger ones spill to disk)
_MIN_READ = 1024 * 1024  # small reads (Avro, Parquet footers) are served from one ranged GET of at least this


class ShortReadError(ConnectionError):
    """A response carried fewer bytes than the range asked for: the connection was cut. A ConnectionError,
    so google-cloud-storage's predicate retries it."""


def retry_policy(timeouts: StoreTimeouts) -> Retry:
    """google-cloud-storage's retry predicate (timeouts, resets, short reads, 408/429/5xx), our backoff and deadline."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_delay(initial=0.2, maximum=5.0, multiplier=2.0).with_timeout(timeouts.retry_deadline_s)


def _split(path: str) -> tuple[str, str]:
    bucket, _, name = path.lstrip("/").partition("/")
    return bucket, name


class GcsHandler(pafs.FileSystemHandler):
    """The pyarrow filesystem interface, each operation one retried, breaker-guarded google-cloud-storage call."""

    def __init__(self, client: Client, timeouts: StoreTimeouts) -> None:
        self.client = client
        self.timeouts = timeouts
        self.retry = retry_policy(timeouts)

    def call(self, bucket: str, operation: Callable[[], T]) -> T:
        """Run `operation` with retries; every attempt counts for the bucket's breaker."""
        store = f"gs://{bucket}"
        return self.retry(lambda: BREAKER.call(store, operation))()

    @property
    def timeout(self) -> tuple[float, float]:
        return self.timeouts.pair

    # ---- identity ------------------------------------------------------------------------------------------
    def get_type_name(self) -> str:
        return "nextesy-gcs"

    def normalize_path(self, path: str) -> str:
        return path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GcsHandler) and other.client is self.client

    def __hash__(self) -> int:
        return id(self.client)

    # ---- metadata ------------------------------------------------------------------------------------------
    def blob(self, path: str) -> Blob | None:
        """The object's metadata (size, generation, CRC32C), or None when there is none."""
        bucket, name = _split(path)
        return self.call(bucket, lambda: self.client.bucket(bucket).get_blob(name, timeout=self.timeout, retry=None))

    def crc32c(self, path: str) -> int:
        """The CRC32C GCS computed over the object's bytes, read from its metadata (nothing downloaded)."""
        blob = self.blob(path)
        if blob is None or blob.crc32c is None:
            raise FileNotFoundError(f"gs://{path}")
        return int.from_bytes(base64.b64decode(blob.crc32c), "big")

    def _list(self, bucket: str, prefix: str, delimiter: str | None = None, limit: int | None = None) -> list[Any]:
        def listing() -> list[Any]:
            pages = self.client.list_blobs(
                bucket, prefix=prefix, delimiter=delimiter, max_results=limit, timeout=self.timeout, retry=None
            )
            blobs = list(pages)
            return [*blobs, *(f"{p}" for p in getattr(pages, "prefixes", ()))]

        return self.call(bucket, listing)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return [self._info(path) for path in paths]

    def _info(self, path: str) -> pafs.FileInfo:
        bucket, name = _split(path)
        if not name:
            return pafs.FileInfo(path, pafs.FileType.Directory)
        blob = self.blob(path)
        if blob is not None:
            return pafs.FileInfo(path, pafs.FileType.File, size=blob.size, mtime=blob.updated)
        if self._list(bucket, name.rstrip("/") + "/", limit=1):
            return pafs.FileInfo(path, pafs.FileType.Directory)
        return pafs.FileInfo(path, pafs.FileType.NotFound)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        bucket, name = _split(selector.base_dir)
        prefix = name.rstrip("/") + "/" if name else ""
        infos: list[pafs.FileInfo] = []
        directories: set[str] = set()
        for item in self._list(bucket, prefix, delimiter=None if selector.recursive else "/"):
            if isinstance(item, str):  # a common prefix: a directory one level down
                directories.add(item.rstrip("/"))
                continue
            infos.append(pafs.FileInfo(f"{bucket}/{item.name}", pafs.FileType.File, size=item.size, mtime=item.updated))
            parts = item.name[len(prefix) :].split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                directories.add(prefix + "/".join(parts[:depth]))
        infos.extend(pafs.FileInfo(f"{bucket}/{d}", pafs.FileType.Directory) for d in sorted(directories))
        if not infos and not selector.allow_not_found and self._info(selector.base_dir).type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"gs://{selector.base_dir}")
        return infos

    # ---- changes -------------------------------------------------------------------------------------------
    def create_dir(self, path: str, recursive: bool) -> None:
        """Object stores have no directories (and marker objects would show up in listings)."""

    def delete_dir(self, path: str) -> None:
        self.delete_dir_contents(path, missing_dir_ok=True)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        bucket, name = _split(path)
        for item in self._list(bucket, name.rstrip("/") + "/"):
            self.delete_file(f"{bucket}/{item.name}")

    def delete_root_dir_contents(self) -> None:
        raise PermissionError("refusing to delete every object of every bucket")

    def delete_file(self, path: str) -> None:
        from google.api_core.exceptions import NotFound

        bucket, name = _split(path)
        try:
            self.call(bucket, lambda: self.client.bucket(bucket).blob(name).delete(timeout=self.timeout, retry=None))
        except NotFound:
            raise FileNotFoundError(f"gs://{path}") from None

    def copy_file(self, src: str, dest: str) -> None:
        src_bucket, src_name = _split(src)
        dest_bucket, dest_name = _split(dest)
        source = self.client.bucket(src_bucket)
        self.call(
            dest_bucket,
            lambda: source.copy_blob(
                source.blob(src_name), self.client.bucket(dest_bucket), dest_name, timeout=self.timeout, retry=None
            ),
        )

    def move(self, src: str, dest: str) -> None:
        self.copy_file(src, dest)
        self.delete_file(src)

    # ---- data ----------------------------------------------------------------------------------------------
    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.open_input_file(path)

    def open_input_file(self, path: str) -> pa.NativeFile:
        blob = self.blob(path)
        if blob is None:
            raise FileNotFoundError(f"gs://{path}")
        return pa.PythonFile(_Reader(self, blob), mode="r")

    def open_output_stream(self, path: str, metadata: dict[str, str] | None = None) -> pa.NativeFile:
        return pa.PythonFile(_Writer(self, path), mode="w")

    def open_append_stream(self, path: str, metadata: dict[str, str] | None = None) -> pa.NativeFile:
        raise NotImplementedError("GCS objects cannot be appended to")


class _Reader(io.RawIOBase):
    """Seekable reads of one object generation (a rewrite mid-read fails rather than mixing versions).

    A read of the whole object is verified against the object's CRC32C; a ranged read against its length.
    """

    def __init__(self, handler: GcsHandler, blob: Blob) -> None:
        self.handler = handler
        self.bucket = blob.bucket.name
        # A fresh handle on the generation just seen: downloads go to the client's endpoint, not to the
        # mediaLink the metadata carries (an emulator names its own address there, past any proxy).
        self.blob = handler.client.bucket(self.bucket).blob(blob.name, generation=blob.generation)
        self.size = int(blob.size or 0)
        self.position = 0
        self.buffer, self.buffer_start = b"", 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self.size - self.position
        end = min(self.size, self.position + size)
        if end <= self.position:
            return b""
        if not (self.buffer_start <= self.position and end <= self.buffer_start + len(self.buffer)):
            fetch_end = min(self.size, max(end, self.position + _MIN_READ))
            self.buffer, self.buffer_start = self._fetch(self.position, fetch_end), self.position
        offset = self.position - self.buffer_start
        data = self.buffer[offset : offset + (end - self.position)]
        self.position = end
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, target: Any) -> int:
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)

    def _fetch(self, start: int, end: int) -> bytes:
        whole = start == 0 and end == self.size

        def download() -> bytes:
            data = self.blob.download_as_bytes(
                start=None if whole else start,
                end=None if whole else end - 1,
                checksum="crc32c" if whole else None,
                timeout=self.handler.timeout,
                retry=None,
            )
            if len(data) != end - start:
                raise ShortReadError(f"gs://{self.bucket}/{self.blob.name}: got {len(data)} of {end - start} bytes")
            return data

        return self.handler.call(self.bucket, download)


class _Writer(io.RawIOBase):
    """Buffers an object and uploads it on close, in one request up to 8 MiB (from a temporary file beyond).

    A retried upload starts again from the first byte, so no half-sent chunk is ever resumed.
    """

    def __init__(self, handler: GcsHandler, path: str) -> None:
        self.handler = handler
        self.bucket, self.name = _split(path)
        self.spool = tempfile.SpooledTemporaryFile(max_size=_CHUNK)  # noqa: SIM115 - closed in close()
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        count = self.spool.write(data)
        self.written += count
        return count

    def tell(self) -> int:
        return self.written

    def flush(self) -> None:
        """Nothing reaches the store before close: a half-written object is never visible."""

    def close(self) -> None:
        if self.closed:
            return
        try:
            blob = self.handler.client.bucket(self.bucket).blob(self.name)

            def upload() -> None:
                self.spool.seek(0)
                blob.upload_from_file(
                    self.spool, size=self.written, checksum="crc32c", timeout=self.handler.timeout, retry=None
                )

            self.handler.call(self.bucket, upload)
        finally:
            self.spool.close()
            super().close()


def gcs_filesystem(client: Client, timeouts: StoreTimeouts) -> pafs.FileSystem:
    return pafs.PyFileSystem(GcsHandler(client, timeouts))
