"""Object storage behind one small interface: local directories, s3:// and gs:// through pyarrow.fs."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import pyarrow.fs as pafs


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object. `key` is relative to the prefix it was listed under."""

    key: str
    uri: str
    size: int
    etag: str


@lru_cache(maxsize=32)
def _filesystem(scheme_and_authority: str) -> pafs.FileSystem:
    if not scheme_and_authority:
        return pafs.LocalFileSystem()
    fs, _ = pafs.FileSystem.from_uri(scheme_and_authority + "/")
    return fs


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding `uri` and the path inside it."""
    if "://" not in uri:
        return _filesystem(""), uri
    scheme, rest = uri.split("://", 1)
    if scheme == "file":
        return _filesystem(""), "/" + rest.lstrip("/")
    bucket = rest.split("/", 1)[0]
    return _filesystem(f"{scheme}://{bucket}"), rest


def join(uri: str, *parts: str) -> str:
    return posixpath.join(uri, *parts)


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = resolve(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type == pafs.FileType.File


def delete(uri: str) -> None:
    fs, path = resolve(uri)
    fs.delete_file(path)


def stat(uri: str) -> ObjectInfo:
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
    """Pages of the objects under `prefix_uri`, in key order, whose key sorts after `start_after`."""
    fs, root = resolve(prefix_uri)
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        return
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    objects = sorted(
        (
            ObjectInfo(
                key=posixpath.relpath(info.path, root),
                uri=join(prefix_uri, posixpath.relpath(info.path, root)),
                size=info.size,
                etag=_etag(info),
            )
            for info in infos
            if info.type == pafs.FileType.File
        ),
        key=lambda o: o.key,
    )
    objects = [o for o in objects if o.key > start_after]
    for start in range(0, len(objects), page_size):
        yield objects[start : start + page_size]
