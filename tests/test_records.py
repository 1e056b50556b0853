"""The input contract, called directly: every record becomes a good row or a reject with a reason."""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime

import numpy as np
import pytest

from nextesy_assets import native
from nextesy_assets.lib.records import Reason, open_landing, parse_jsonl

from .conftest import BAD_LINES, DIMS, good_record, vector


def parse(lines: list[str], fmt: str = "jsonl", raw_limit: int = 10_000):  # type: ignore[no-untyped-def]
    data = "".join(line + "\n" for line in lines).encode()
    if fmt == "jsonl.gz":
        data = gzip.compress(data)
    return parse_jsonl(open_landing(data, fmt), DIMS, "default-model", raw_limit)


@pytest.mark.parametrize(("line", "reason"), BAD_LINES, ids=[f"{r}-{i}" for i, (_, r) in enumerate(BAD_LINES)])
def test_each_bad_record_gets_its_reason_and_good_rows_survive(line: str, reason: str) -> None:
    batch = parse([json.dumps(good_record(1)), line, json.dumps(good_record(2))])
    assert batch.rows_in == 3
    assert batch.ids == ["doc-1", "doc-2"]
    [reject] = batch.rejects
    assert (reject.record_index, reject.reason) == (1, Reason(reason))
    assert reject.raw == line
    assert reject.detail


def test_duplicate_key_keeps_the_first_and_other_models_are_not_duplicates() -> None:
    first = good_record(1, payload_marker="first")
    again = good_record(1, payload_marker="second")
    other_model = good_record(1, model="other-model")
    batch = parse([json.dumps(first), json.dumps(again), json.dumps(other_model)])
    assert batch.ids == ["doc-1", "doc-1"]
    assert batch.models == ["default-model", "other-model"]
    assert json.loads(batch.payloads[0] or "{}") == {"payload_marker": "first"}
    assert [(r.record_index, r.reason) for r in batch.rejects] == [(1, Reason.DUPLICATE_KEY)]


def test_a_rejected_first_occurrence_does_not_make_the_valid_second_a_duplicate() -> None:
    bad = good_record(1)
    bad["vector"] = [float("nan")] * DIMS
    batch = parse([json.dumps(bad), json.dumps(good_record(1))])
    assert batch.ids == ["doc-1"]
    assert [r.reason for r in batch.rejects] == [Reason.NON_FINITE]


def test_timestamps_iso_with_offset_and_epoch_millis_are_the_same_instant() -> None:
    instant = datetime(2026, 11, 20, 9, 30, 15, 250_000, tzinfo=UTC)
    millis = int(instant.timestamp() * 1000)
    lines = [
        json.dumps({"id": "a", "vector": vector(1), "ts": "2026-11-20T10:30:15.250+01:00"}),
        json.dumps({"id": "b", "vector": vector(1), "ts": "2026-11-20T09:30:15.25Z"}),
        json.dumps({"id": "c", "vector": vector(1), "ts": millis}),
    ]
    batch = parse(lines)
    assert not batch.rejects
    assert batch.ts_micros == [millis * 1000] * 3


def test_payload_holds_every_unknown_field_and_model_source_are_columns() -> None:
    record = good_record(3, model="m-v2", lang="en", meta={"k": [1, 2]})
    batch = parse([json.dumps(record)])
    assert batch.models == ["m-v2"]
    assert batch.sources == ["search-api"]
    assert json.loads(batch.payloads[0] or "") == {"lang": "en", "meta": {"k": [1, 2]}}
    plain = parse([json.dumps({"id": "x", "vector": vector(1), "ts": 0})])
    assert plain.payloads == [None] and plain.sources == [None] and plain.models == ["default-model"]


def test_vectors_are_float32_and_norms_come_from_the_native_kernel() -> None:
    records = [good_record(i) for i in range(5)]
    batch = parse([json.dumps(r) for r in records])
    expected = np.array([r["vector"] for r in records], dtype=np.float32)
    assert batch.vectors.dtype == np.float32
    assert np.array_equal(batch.vectors, expected)
    np.testing.assert_allclose(batch.norms, np.linalg.norm(expected.astype(np.float64), axis=1), rtol=1e-12)


def test_empty_and_blank_files_are_zero_rows_not_errors() -> None:
    for lines in ([], ["", "   ", ""]):
        batch = parse(lines)
        assert (batch.rows_in, batch.rows_good, batch.rejects) == (0, 0, [])
        assert batch.vectors.shape == (0, DIMS)


def test_gzip_files_read_like_plain_ones() -> None:
    lines = [json.dumps(good_record(i)) for i in range(4)] + [BAD_LINES[0][0]]
    plain, packed = parse(lines), parse(lines, fmt="jsonl.gz")
    assert packed.ids == plain.ids
    assert [(r.record_index, r.reason) for r in packed.rejects] == [(4, Reason.MALFORMED_RECORD)]


def test_a_truncated_gzip_keeps_what_decodes_and_quarantines_the_rest() -> None:
    lines = [json.dumps(good_record(i)) for i in range(200)]
    data = gzip.compress("".join(line + "\n" for line in lines).encode())
    batch = parse_jsonl(open_landing(data[: len(data) // 2], "jsonl.gz"), DIMS, "m", 100)
    assert 0 < batch.rows_good < 200
    assert batch.rejects[-1].reason == Reason.UNREADABLE_FILE
    assert batch.rows_in == batch.rows_good + len(batch.rejects)


def test_raw_text_of_a_reject_is_truncated_to_the_limit() -> None:
    line = json.dumps({"id": "short", "vector": vector(1)[:3], "ts": 0, "blob": "x" * 500})
    batch = parse([line], raw_limit=64)
    assert batch.rejects[0].raw == line[:64]


def test_native_vector_stats_agrees_with_numpy() -> None:
    rng = np.random.default_rng(7)
    matrix = rng.standard_normal((50, 33)).astype(np.float32)
    matrix[3, 5] = np.nan
    matrix[10, 0] = np.inf
    matrix[11, 32] = -np.inf
    finite, norms = native.vector_stats(matrix)
    expected_finite = np.isfinite(matrix).all(axis=1)
    assert np.array_equal(finite, expected_finite)
    np.testing.assert_allclose(
        norms[expected_finite], np.linalg.norm(matrix[expected_finite].astype(np.float64), axis=1)
    )
    assert np.isnan(norms[~expected_finite]).all()
    assert native.native_version()


def test_native_vector_stats_refuses_a_flat_array() -> None:
    with pytest.raises(ValueError, match="2-D"):
        native.vector_stats(np.zeros(4, dtype=np.float32))


def test_open_landing_passes_plain_bytes_through() -> None:
    assert open_landing(b"abc\n", "jsonl").read() == io.BytesIO(b"abc\n").read()
