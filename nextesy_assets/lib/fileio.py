"""pyiceberg's FileIO with Nextesy's store clients: gs:// through google-cloud-storage, with read timeouts.

Set as `py-io-impl` on the embedded catalogs; a catalog configured in pyiceberg's own configuration can
name it too (`py-io-impl: nextesy_assets.lib.fileio.NextesyFileIO`). Everything but GCS is pyarrow's.
It also carries the failpoint `iceberg.commit_metadata_written`: a commit's new metadata file (and its
manifests) are written, the catalog does not point at them yet.
"""

from __future__ import annotations

import posixpath
from typing import Any

import pyarrow.fs as pafs
from pyiceberg.io import OutputStream
from pyiceberg.io.pyarrow import PyArrowFile, PyArrowFileIO

from . import failpoints

COMMIT_METADATA_WRITTEN = "iceberg.commit_metadata_written"


class NextesyFileIO(PyArrowFileIO):
    def _initialize_gcs_fs(self) -> pafs.FileSystem:
        from . import storage

        return storage.filesystem_for("gs")

    def new_output(self, location: str) -> PyArrowFile:
        output = super().new_output(location)
        name = posixpath.basename(location)
        if name.endswith(".metadata.json") and not name.startswith("00000-"):  # a commit, not a creation
            return _FailpointFile(output)
        return output


class _FailpointFile(PyArrowFile):
    def __init__(self, inner: PyArrowFile) -> None:
        self.__dict__.update(inner.__dict__)

    def create(self, overwrite: bool = False) -> OutputStream:
        return _AfterClose(super().create(overwrite=overwrite))


class _AfterClose:
    """The stream as pyiceberg uses it; the failpoint is reached once the file is complete in the store."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, data: bytes) -> int:
        return int(self.stream.write(data))

    def close(self) -> None:
        self.stream.close()
        failpoints.hit(COMMIT_METADATA_WRITTEN)

    def __enter__(self) -> _AfterClose:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
