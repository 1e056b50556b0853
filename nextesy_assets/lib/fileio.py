"""pyiceberg's FileIO with Nextesy's store clients: gs:// through google-cloud-storage, with read timeouts.

Set as `py-io-impl` on the embedded catalogs; a catalog configured in pyiceberg's own configuration can
name it too (`py-io-impl: nextesy_assets.lib.fileio.NextesyFileIO`). Everything but GCS is pyarrow's.
"""

from __future__ import annotations

import pyarrow.fs as pafs
from pyiceberg.io.pyarrow import PyArrowFileIO


class NextesyFileIO(PyArrowFileIO):
    def _initialize_gcs_fs(self) -> pafs.FileSystem:
        from . import storage

        return storage.filesystem_for("gs")
