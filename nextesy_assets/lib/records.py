"""The input contract: parse landing records, validate them and split good rows from rejects.

This is the reference (oracle) implementation; the native engine must agree with it record for record.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import IO, Any

import numpy as np
import orjson

from .. import native
from .errors import InvalidLandingFileError


class Reason(StrEnum):
    """Stable quarantine reason codes: users filter and alert on these, so they never change."""

    MALFORMED_RECORD = "malformed_record"
    MISSING_FIELD = "missing_field"
    BAD_TYPE = "bad_type"
    WRONG_DIMENSION = "wrong_dimension"
    NON_FINITE = "non_finite"
    BAD_TIMESTAMP = "bad_timestamp"
    DUPLICATE_KEY = "duplicate_key"
    UNREADABLE_FILE = "unreadable_file"


KNOWN_FIELDS = frozenset({"id", "vector", "ts", "model", "source"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Iceberg timestamps are microseconds in an int64; keep a margin inside what datetime can represent.
_MIN_MICROS = int((datetime(1, 1, 2, tzinfo=UTC) - _EPOCH).total_seconds()) * 1_000_000
_MAX_MICROS = int((datetime(9999, 12, 31, tzinfo=UTC) - _EPOCH).total_seconds()) * 1_000_000


@dataclass(frozen=True)
class Reject:
    record_index: int
    reason: Reason
    detail: str
    raw: str


@dataclass
class ParsedBatch:
    """Good rows as columns (vectors as one float32 matrix) and the rejected records."""

    dims: int
    ids: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    ts_micros: list[int] = field(default_factory=list)
    sources: list[str | None] = field(default_factory=list)
    payloads: list[str | None] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.empty((0, 0), dtype=np.float32))
    norms: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float64))
    rejects: list[Reject] = field(default_factory=list)
    rows_in: int = 0
    extras: dict[str, list[Any]] = field(default_factory=dict)  # promoted field -> one value per good row

    @property
    def rows_good(self) -> int:
        return len(self.ids)


class _Rejected(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# The accepted ISO-8601 forms (the native engine implements the same grammar):
# YYYY-MM-DD(T|t| )HH:MM[:SS[(.|,)F{1,9}]](Z|z|+HH|+HHMM|+HH:MM|-...); the fraction is truncated to µs.
_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]{1,9}))?)?"
    r"(?:[Zz]|([+-])([0-9]{2})(?::?([0-9]{2}))?)"
)


def _parse_iso(text: str) -> int | None:
    """Microseconds since the epoch of an ISO-8601 timestamp with an offset, or None if it is not one."""
    match = _ISO.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), tzinfo=UTC)
    except ValueError:
        return None
    offset = 0
    if sign is not None:
        if int(off_h) > 23 or int(off_m or 0) > 59:
            return None
        offset = (int(off_h) * 3600 + int(off_m or 0) * 60) * (-1 if sign == "-" else 1)
    delta = moment - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds - offset
    return seconds * 1_000_000 + int((fraction or "0")[:6].ljust(6, "0"))


def _parse_ts(value: Any) -> int:
    """Event time as microseconds since the epoch (UTC)."""
    if isinstance(value, bool):
        raise _Rejected(
            Reason.BAD_TIMESTAMP, f"ts must be ISO-8601 with an offset or epoch milliseconds, got {value!r}"
        )
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise _Rejected(Reason.BAD_TIMESTAMP, f"ts is not a finite number: {value!r}")
        micros = int(value) * 1000 if isinstance(value, int) else round(value * 1000)
    elif isinstance(value, str):
        parsed = _parse_iso(value)
        if parsed is None:
            raise _Rejected(Reason.BAD_TIMESTAMP, f"ts is not ISO-8601 with an offset: {value!r}")
        micros = parsed
    else:
        raise _Rejected(
            Reason.BAD_TIMESTAMP,
            f"ts must be ISO-8601 with an offset or epoch milliseconds, got {type(value).__name__}",
        )
    if not _MIN_MICROS <= micros <= _MAX_MICROS:
        raise _Rejected(Reason.BAD_TIMESTAMP, f"ts is out of range: {value!r}")
    return micros


def _optional_str(record: dict[str, Any], name: str) -> str | None:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _Rejected(Reason.BAD_TYPE, f"{name} must be a non-empty string, got {value!r:.80}")
    return value


def _load_line(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # Python's json writes NaN/Infinity by default; read them so they get the right reason
        # (non_finite) instead of malformed_record.
        return json.loads(text)


_EXTRA_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "string": (lambda v: isinstance(v, str), "a string"),
    "long": (lambda v: type(v) is int and -(2**63) <= v < 2**63, "a 64-bit integer"),
    "double": (lambda v: type(v) in (int, float), "a number"),
    "boolean": (lambda v: type(v) is bool, "true or false"),
}


def _promote(extra: dict[str, Any], extra_columns: tuple[tuple[str, str], ...]) -> tuple[Any, ...]:
    """Take the configured fields out of the payload, checking each against its declared type."""
    values = []
    for name, kind in extra_columns:
        value = extra.pop(name, None)
        accepts, expected = _EXTRA_CHECKS[kind]
        if value is not None and not accepts(value):
            raise _Rejected(Reason.BAD_TYPE, f"{name} must be {expected} (NEXTESY_EXTRA_COLUMNS), got {value!r:.40}")
        values.append(float(value) if kind == "double" and value is not None else value)
    return tuple(values)


def _validate(
    record: Any, dims: int, default_model: str, extra_columns: tuple[tuple[str, str], ...] = ()
) -> tuple[str, str, list[Any], int, str | None, str | None, tuple[Any, ...]]:
    if not isinstance(record, dict):
        raise _Rejected(Reason.MALFORMED_RECORD, f"record must be a JSON object, got {type(record).__name__}")
    for name in ("id", "vector", "ts"):
        if record.get(name) is None:
            raise _Rejected(Reason.MISSING_FIELD, f"{name} is missing")
    record_id = record["id"]
    if not isinstance(record_id, str):
        raise _Rejected(Reason.BAD_TYPE, f"id must be a string, got {type(record_id).__name__}")
    if not record_id:
        raise _Rejected(Reason.MISSING_FIELD, "id is empty")
    model = _optional_str(record, "model") or default_model
    source = _optional_str(record, "source")
    vector = record["vector"]
    if not isinstance(vector, list):
        raise _Rejected(Reason.BAD_TYPE, f"vector must be an array of numbers, got {type(vector).__name__}")
    for position, value in enumerate(vector):
        if type(value) is not float and type(value) is not int:
            raise _Rejected(Reason.BAD_TYPE, f"vector[{position}] is not a number: {value!r:.40}")
    if len(vector) != dims:
        raise _Rejected(Reason.WRONG_DIMENSION, f"vector has {len(vector)} values, expected {dims}")
    ts = _parse_ts(record["ts"])
    extra = {k: v for k, v in record.items() if k not in KNOWN_FIELDS}
    promoted = _promote(extra, extra_columns)
    payload = _payload(extra) if extra else None
    return record_id, model, vector, ts, source, payload, promoted


def _payload(extra: dict[str, Any]) -> str:
    """Compact JSON with sorted keys; integers beyond 64 bits (which orjson refuses) kept exact."""
    try:
        return orjson.dumps(extra, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return json.dumps(extra, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def open_landing(data: bytes, fmt: str) -> IO[bytes]:
    """A byte stream of the records in a landing file's content."""
    return open_landing_stream(io.BytesIO(data), fmt)


@dataclass
class _Candidate:
    index: int
    text: str
    record_id: str
    model: str
    vector: list[Any]
    ts: int
    source: str | None
    payload: str | None
    promoted: tuple[Any, ...] = ()


# Rows validated together by the native kernel; bounds the memory held for their raw text.
_CHUNK_ROWS = 2048


class _Collector:
    """Takes validated candidates in record order; checks finiteness in bulk and duplicate keys in order."""

    def __init__(self, batch: ParsedBatch, raw_limit: int) -> None:
        self.batch = batch
        self.raw_limit = raw_limit
        self.pending: list[_Candidate] = []
        self.seen: set[tuple[str, str, int]] = set()
        self.vectors: list[np.ndarray] = []
        self.norms: list[np.ndarray] = []

    def add(self, candidate: _Candidate) -> None:
        self.pending.append(candidate)
        if len(self.pending) >= _CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        matrix = _to_float32(self.pending, self.batch.dims)
        finite, norms = native.vector_stats(matrix)
        keep = np.zeros(len(self.pending), dtype=bool)
        for row, candidate in enumerate(self.pending):
            key = (candidate.record_id, candidate.model, candidate.ts)
            if not finite[row]:
                self._reject(candidate, Reason.NON_FINITE, "vector has NaN or infinite values (as float32)")
            elif key in self.seen:
                self._reject(candidate, Reason.DUPLICATE_KEY, f"(id, model, ts) repeats an earlier record: {key[:2]!r}")
            else:
                self.seen.add(key)
                keep[row] = True
                batch = self.batch
                batch.ids.append(candidate.record_id)
                batch.models.append(candidate.model)
                batch.ts_micros.append(candidate.ts)
                batch.sources.append(candidate.source)
                batch.payloads.append(candidate.payload)
                for values, value in zip(batch.extras.values(), candidate.promoted, strict=True):
                    values.append(value)
        self.vectors.append(matrix[keep])
        self.norms.append(norms[keep])
        self.pending = []

    def _reject(self, candidate: _Candidate, reason: Reason, detail: str) -> None:
        self.batch.rejects.append(Reject(candidate.index, reason, detail, candidate.text[: self.raw_limit]))

    def finish(self) -> None:
        self.flush()
        dims = self.batch.dims
        self.batch.vectors = np.concatenate(self.vectors) if self.vectors else np.empty((0, dims), np.float32)
        self.batch.norms = np.concatenate(self.norms) if self.norms else np.empty(0, np.float64)
        self.batch.rejects.sort(key=lambda r: r.record_index)


def _to_float32(candidates: list[_Candidate], dims: int) -> np.ndarray:
    """Vectors as a float32 matrix; values beyond float32's range become inf (and so non_finite)."""
    matrix = np.empty((len(candidates), dims), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for row, candidate in enumerate(candidates):
            try:
                matrix[row] = np.asarray(candidate.vector, dtype=np.float64)
            except OverflowError:  # an integer too large even for float64
                matrix[row] = np.inf
    return matrix


# What a format reader yields per record: its index, its raw text, and the record (a dict in the
# contract's terms) or the reason it could not even become one.
_Item = tuple[int, str, "dict[str, Any] | _Rejected"]


class _Unreadable(Exception):
    """The input cannot be read past this point (a damaged compressed stream)."""

    def __init__(self, index: int, detail: str) -> None:
        super().__init__(detail)
        self.index = index
        self.detail = detail


def _consume(
    batch: ParsedBatch,
    items: Iterator[_Item],
    raw_limit: int,
    default_model: str,
    extra_columns: tuple[tuple[str, str], ...],
) -> ParsedBatch:
    collector = _Collector(batch, raw_limit)
    while True:
        try:
            index, text, record = next(items)
        except StopIteration:
            break
        except _Unreadable as exc:
            # What was read so far stands; the unreadable rest is one reject.
            batch.rows_in += 1
            batch.rejects.append(
                Reject(exc.index, Reason.UNREADABLE_FILE, f"file cannot be read past this point: {exc.detail}", "")
            )
            break
        batch.rows_in += 1
        try:
            if isinstance(record, _Rejected):
                raise record
            fields_ = _validate(record, batch.dims, default_model, extra_columns)
        except _Rejected as rejected:
            batch.rejects.append(Reject(index, rejected.reason, rejected.detail, text[:raw_limit]))
            continue
        collector.add(_Candidate(index, text, *fields_))
    collector.finish()
    return batch


def _py_strip(line: bytes) -> str:
    return line.decode("utf-8", errors="replace").strip()


def _json_record(text: str, what: str = "") -> dict[str, Any] | _Rejected:
    try:
        record = _load_line(text)
    except ValueError as exc:
        return _Rejected(Reason.MALFORMED_RECORD, f"{what}not valid JSON: {exc}")
    if not isinstance(record, dict):
        return _Rejected(
            Reason.MALFORMED_RECORD, f"{what or 'record '}must be a JSON object, got {type(record).__name__}"
        )
    return record


def _jsonl_items(stream: IO[bytes]) -> Iterator[_Item]:
    lines = enumerate(stream)
    index = -1
    while True:
        try:
            index, line = next(lines)
        except StopIteration:
            return
        except (OSError, EOFError, zlib.error) as exc:
            raise _Unreadable(index + 1, str(exc)) from None
        text = _py_strip(line)
        if text:
            yield index, text, _json_record(text)


def parse_jsonl(
    stream: IO[bytes],
    dims: int,
    default_model: str,
    raw_limit: int,
    extra_columns: tuple[tuple[str, str], ...] = (),
) -> ParsedBatch:
    """Validate JSONL records; every record ends up a good row or a reject with a reason.

    `record_index` is the 0-based line number in the (decompressed) file; blank lines are not records.
    Fields named in `extra_columns` become columns of their own instead of staying in `payload`.
    """
    batch = ParsedBatch(dims=dims, extras={name: [] for name, _ in extra_columns})
    return _consume(batch, _jsonl_items(stream), raw_limit, default_model, extra_columns)


_INTEGER = re.compile(r"-?[0-9]+")


def _csv_number(text: str) -> Any:
    """A `v<i>` cell as a number, or the text itself (which the contract then rejects as not a number)."""
    try:
        value = _load_line(text.strip())
    except ValueError:
        return text
    return value if type(value) in (int, float) else text


def _csv_items(stream: IO[bytes]) -> Iterator[_Item]:
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
    try:
        yield from _csv_rows(csv.reader(text))
    finally:
        text.detach()  # the caller owns (and closes) the byte stream


def _csv_rows(reader: Iterator[list[str]]) -> Iterator[_Item]:
    header = [h.strip() for h in next(reader, [])]
    position = {name: i for i, name in reversed(list(enumerate(header)))}
    columns = []
    while f"v{len(columns)}" in position:
        columns.append(position[f"v{len(columns)}"])
    if "vector" not in position and not columns:
        raise InvalidLandingFileError(
            f"CSV header has no `vector` column and no `v0..v{{d-1}}` columns (header: {','.join(header)})"
        )
    core = {"id", "ts", "model", "source", "vector"}
    extras = [(name, i) for i, name in enumerate(header) if name not in core and i not in columns]
    index = -1
    for row in reader:
        if not row:
            continue  # blank lines are not records
        index += 1
        raw = ",".join(row)

        def cell(name: str, row: list[str] = row) -> str | None:
            i = position.get(name)
            return row[i] if i is not None and i < len(row) and row[i] != "" else None

        record: dict[str, Any] = {}
        for name in ("id", "model", "source"):
            if (value := cell(name)) is not None:
                record[name] = value
        if (ts := cell("ts")) is not None:
            record["ts"] = int(ts) if _INTEGER.fullmatch(ts) else ts
        if "vector" in position:
            if (text := cell("vector")) is not None:
                try:
                    record["vector"] = _load_line(text)
                except ValueError as exc:
                    yield index, raw, _Rejected(Reason.MALFORMED_RECORD, f"vector is not valid JSON: {exc}")
                    continue
        else:
            record["vector"] = [_csv_number(row[i] if i < len(row) else "") for i in columns]
        for name, i in extras:
            if i < len(row) and row[i] != "":
                record[name] = row[i]
        yield index, raw, record


def sidecar_candidates(npy_path: str) -> list[str]:
    """Where the metadata of an NPY file may be: `<stem>.meta.jsonl`, then `<stem>.meta.parquet`."""
    stem = npy_path[: -len(".npy")] if npy_path.endswith(".npy") else npy_path
    return [stem + ".meta.jsonl", stem + ".meta.parquet"]


def _plain(value: Any) -> Any:
    """A value read from Parquet in JSON terms: timestamps as ISO-8601 text, the rest unchanged."""
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _arrow_rows(table: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    for row in table.to_pylist():
        record = {k: _plain(v) for k, v in row.items() if k != "vector"}
        yield orjson.dumps(record, default=str).decode(), record


def _npy_items(path: str, sidecar: str | None) -> Iterator[_Item]:
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InvalidLandingFileError(f"{path}: not a readable NPY file: {exc}") from None
    if matrix.dtype not in (np.float32, np.float64) or matrix.ndim != 2:
        raise InvalidLandingFileError(f"{path}: NPY must be a 2-D float32 or float64 array, got {matrix.dtype}")
    if sidecar is None:
        sidecar = next((c for c in sidecar_candidates(path) if os.path.exists(c)), None)
        if sidecar is None:
            raise InvalidLandingFileError(f"{path}: no sidecar with the ids and timestamps")
    if sidecar.endswith(".parquet"):
        import pyarrow.parquet as pq

        metas: Iterable[tuple[str, dict[str, Any] | _Rejected]] = list(_arrow_rows(pq.read_table(sidecar)))
    else:
        with open(sidecar, "rb") as handle:
            texts = [t for t in (_py_strip(line) for line in handle) if t]
        metas = [(t, _json_record(t, "metadata ")) for t in texts]
    metas = list(metas)
    if len(metas) != len(matrix):
        raise InvalidLandingFileError(f"sidecar {sidecar} has {len(metas)} rows but {path} holds {len(matrix)} vectors")
    for index, (text, meta) in enumerate(metas):
        if isinstance(meta, dict):
            meta = {**meta, "vector": matrix[index].tolist()}
        yield index, text, meta


def _parquet_items(path: str) -> Iterator[_Item]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if "vector" not in table.column_names:
        raise InvalidLandingFileError(f"{path}: Parquet file has no `vector` column")
    vectors = table.column("vector").to_pylist()
    for index, (text, record) in enumerate(_arrow_rows(table)):
        if vectors[index] is not None:
            record["vector"] = vectors[index]
        yield index, text, record


def parse_file(
    path: str,
    fmt: str,
    dims: int,
    default_model: str,
    raw_limit: int,
    extra_columns: tuple[tuple[str, str], ...] = (),
    sidecar: str | None = None,
) -> ParsedBatch:
    """The oracle for any landing format: the same records, reasons and rows the native engine gives."""
    batch = ParsedBatch(dims=dims, extras={name: [] for name, _ in extra_columns})
    if fmt in ("jsonl", "jsonl.gz"):
        with open(path, "rb") as handle:
            return _consume(
                batch, _jsonl_items(open_landing_stream(handle, fmt)), raw_limit, default_model, extra_columns
            )
    if fmt == "csv":
        with open(path, "rb") as handle:
            return _consume(batch, _csv_items(handle), raw_limit, default_model, extra_columns)
    if fmt == "npy":
        return _consume(batch, _npy_items(path, sidecar), raw_limit, default_model, extra_columns)
    if fmt == "parquet":
        return _consume(batch, _parquet_items(path), raw_limit, default_model, extra_columns)
    raise InvalidLandingFileError(f"unknown format {fmt!r}: expected jsonl, jsonl.gz, csv, npy or parquet")


def open_landing_stream(handle: IO[bytes], fmt: str) -> IO[bytes]:
    """The records' byte stream of an open landing file (gunzipped for `jsonl.gz`)."""
    return gzip.GzipFile(fileobj=handle) if fmt == "jsonl.gz" else handle
