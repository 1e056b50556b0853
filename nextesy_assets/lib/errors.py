"""The project's exception tree: one root, split by what a retry can do about it."""

from __future__ import annotations


class NextesyError(Exception):
    """Root of every error Nextesy raises on purpose."""


class TransientError(NextesyError):
    """A failure that a retry may fix: a lost connection, a commit conflict, a throttled store."""


class TerminalError(NextesyError):
    """A failure that a retry will not fix: bad configuration, a bad file, a broken invariant."""


class ConfigurationError(TerminalError):
    """A setting is missing or has a value that cannot work."""


class UnsupportedFormatError(TerminalError):
    """A landing file whose type Nextesy cannot read."""


class BatchNotFoundError(TerminalError):
    """A batch id that no landing file was registered under."""


class LandingFileChangedError(TerminalError):
    """A landing file changed after its batch was registered; the new content is a new batch."""


class SchemaConflictError(TerminalError):
    """Data or configuration that would change the table in a way that is refused (e.g. its dimension)."""


class ReplicaVerificationError(TransientError):
    """A copied file's checksum does not match its source; the copy is retried, never committed."""


class InvalidLandingFileError(TerminalError):
    """A landing file of a supported type that cannot be read at all (bad header, missing sidecar)."""
