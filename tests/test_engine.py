"""The native engine against the Python oracle: same rows (bit-exact vectors), same rejects and reasons,
in every format; the file-level errors; bounded memory on a large file."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextesy_assets import native
from nextesy_assets.lib.errors import InvalidLandingFileError
from nextesy_assets.lib.records import ParsedBatch, parse_file

from .conftest import BAD_LINES, DIMS, good_record, write_lines

MODEL = "default-model"


def run_native(
    path: Path, fmt: str, out: Path, dims: int = DIMS, **kwargs: Any
) -> tuple[native.ConvertResult, pa.Table]:
    result = native.convert_file(
        path,
        fmt,
        out / "data",
        out / "rejects.parquet",
        dims=dims,
        batch_id="b",
        ingested_at_us=0,
        default_model=MODEL,
        raw_limit=10_000,
        row_group_rows=7,
        **kwargs,
    )
    files = result.data_files.column("path").to_pylist()
    rows = pa.concat_tables([pq.read_table(f) for f in files]) if files else None
    return result, rows


def rows_by_key(table: pa.Table | None) -> dict[tuple[str, str, int], tuple[bytes, str | None, Any]]:
    """Rows keyed by (id, model, ts µs): vector bytes, source and payload (parsed, so formatting is free)."""
    if table is None:
        return {}
    out = {}
    ts = table.column("ts").cast(pa.int64()).to_pylist()
    vectors = table.column("vector").to_pylist()
    for i, (rid, model, source, payload) in enumerate(
        zip(*(table.column(c).to_pylist() for c in ("id", "model", "source", "payload")), strict=True)
    ):
        out[(rid, model, ts[i])] = (
            np.asarray(vectors[i], dtype=np.float32).tobytes(),
            source,
            None if payload is None else json.loads(payload),
        )
    return out


def oracle_rows(batch: ParsedBatch) -> dict[tuple[str, str, int], tuple[bytes, str | None, Any]]:
    return {
        (rid, model, ts): (batch.vectors[i].tobytes(), source, None if payload is None else json.loads(payload))
        for i, (rid, model, ts, source, payload) in enumerate(
            zip(batch.ids, batch.models, batch.ts_micros, batch.sources, batch.payloads, strict=True)
        )
    }


def native_rejects(result: native.ConvertResult) -> list[tuple[int, str]]:
    if result.rejects_path is None:
        return []
    table = pq.read_table(result.rejects_path)
    return list(zip(table.column("record_index").to_pylist(), table.column("reason").to_pylist(), strict=True))


def assert_agree(
    path: Path, fmt: str, out: Path, dims: int = DIMS, sidecar: Path | None = None
) -> native.ConvertResult:
    """Engine and oracle give the same rows, rejects and reasons for `path`."""
    result, rows = run_native(path, fmt, out, dims, sidecar=sidecar)
    oracle = parse_file(str(path), fmt, dims, MODEL, 10_000, (), None if sidecar is None else str(sidecar))
    assert result.rows_in == oracle.rows_in
    assert native_rejects(result) == [(r.record_index, str(r.reason)) for r in oracle.rejects]
    assert rows_by_key(rows) == oracle_rows(oracle)
    assert result.rows_in == result.rows_good + result.rows_rejected
    return result


def test_every_bad_record_kind_agrees_with_the_oracle(
    batch_with_every_reason: tuple[Path, int, dict[str, int]], tmp_path: Path
) -> None:
    path, good, reasons = batch_with_every_reason
    result = assert_agree(path, "jsonl", tmp_path)
    assert result.rows_good == good
    assert result.reasons == reasons


def test_gzip_and_a_truncated_gzip_agree(
    batch_with_every_reason: tuple[Path, int, dict[str, int]], tmp_path: Path
) -> None:
    path, _, _ = batch_with_every_reason
    data = gzip.compress(path.read_bytes() * 20)
    whole = tmp_path / "whole.jsonl.gz"
    whole.write_bytes(data)
    assert_agree(whole, "jsonl.gz", tmp_path / "whole")
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    result = assert_agree(cut, "jsonl.gz", tmp_path / "cut")
    assert result.reasons["unreadable_file"] == 1


# Record fields the generator draws from: good values and every kind of bad one.
_vector_values = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
)
_ts_values = st.one_of(
    st.integers(min_value=-(10**16), max_value=10**16),
    st.floats(min_value=-1e16, max_value=1e16),
    st.sampled_from(
        [
            "2026-11-20T10:00:00Z",
            "2026-11-20 10:00:00.123456789+05:30",
            "2026-11-21T23:59:59,5-0700",
            "2024-02-29T00:00+01",
            "2023-02-29T00:00:00Z",
            "2026-11-20T10:00:00",
            "2026-13-01T00:00:00Z",
            "yesterday",
            "",
        ]
    ),
    st.booleans(),
    st.none(),
)
_ids = st.one_of(st.sampled_from(["a", "b", "c", "é", ""]), st.integers(0, 3), st.none())
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=5))


@st.composite
def records(draw: st.DrawFn) -> str:
    dims = draw(st.sampled_from([DIMS, DIMS, DIMS, DIMS - 1]))
    record: dict[str, Any] = {}
    if draw(st.integers(0, 4)):  # usually present
        record["id"] = draw(_ids)
    record["vector"] = draw(
        st.one_of(
            st.lists(_vector_values, min_size=dims, max_size=dims),
            st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=dims, max_size=dims),
            st.just("not a list"),
            st.lists(st.one_of(_vector_values, st.text(max_size=2), st.booleans(), st.none()), max_size=dims),
        )
    )
    record["ts"] = draw(_ts_values)
    for key in ("model", "source"):
        if draw(st.booleans()):
            record[key] = draw(st.one_of(st.sampled_from(["m1", "m2", ""]), st.integers(0, 2), st.none()))
    for key in draw(st.lists(st.sampled_from(["x", "meta", "y"]), max_size=2)):
        record[key] = draw(
            st.one_of(
                _scalars, st.lists(_scalars, max_size=3), st.dictionaries(st.text(max_size=3), _scalars, max_size=2)
            )
        )
    text = json.dumps(record, allow_nan=True)
    return draw(
        st.one_of(
            st.just(text),
            st.just(text),
            st.just(text),
            st.just(text[: len(text) // 2]),  # malformed
            st.just(json.dumps([1, 2])),  # not an object
            st.just("   "),  # blank
        )
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(records(), max_size=40))
def test_generated_records_agree_with_the_oracle(lines: list[str], tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("gen")
    path = write_lines(tmp / "gen.jsonl", lines + lines[:3])  # repeats: duplicate keys
    assert_agree(path, "jsonl", tmp)


def _good(n: int, days: int = 3) -> list[dict[str, Any]]:
    return [good_record(i, day=18 + i % days, model=f"m{i % 2}", extra=i) for i in range(n)]


def _meta(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "vector"}


def _reference(tmp: Path, recs: list[dict[str, Any]]) -> dict[tuple[str, str, int], Any]:
    path = write_lines(tmp / "ref" / "ref.jsonl", [json.dumps(r) for r in recs])
    return rows_by_key(run_native(path, "jsonl", tmp / "ref")[1])


def test_csv_with_a_json_vector_column_round_trips(tmp_path: Path) -> None:
    recs = _good(40)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["id", "ts", "model", "source", "vector", "extra"])
    writer.writeheader()
    for r in recs:
        writer.writerow({**r, "vector": json.dumps(r["vector"]), "extra": str(r["extra"])})
    writer.writerow({"id": "bad", "ts": "2026-11-20T00:00:00Z", "vector": "[0.1, oops]"})
    writer.writerow({"id": "short", "ts": "1790000000000", "vector": "[0.1]"})
    path = tmp_path / "in.csv"
    path.write_text(buffer.getvalue())
    result = assert_agree(path, "csv", tmp_path / "out")
    assert result.reasons == {"malformed_record": 1, "wrong_dimension": 1}
    expected = {k: (v[0], v[1], {"extra": str(v[2]["extra"])}) for k, v in _reference(tmp_path, recs).items()}
    assert rows_by_key(run_native(path, "csv", tmp_path / "again")[1]) == expected


def test_csv_records_cut_into_blocks_agree_with_the_oracle(tmp_path: Path) -> None:
    """A CSV several read blocks long, whose quoted cells hold newlines, commas and escaped quotes, with
    CRLF line ends and blank lines: every record is whole and keeps its index, however the blocks fall."""
    recs = _good(5000)
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # CRLF line ends, quotes only where needed
    writer.writerow(["id", "ts", "model", "source", "vector", "note"])
    for i, r in enumerate(recs):
        # Cells of varied length, so block ends land inside quoted cells, on CRs and between records.
        note = f'line one, "quoted" {i}\r\nline two\n' + "x" * (i * 37 % 4001) + ("\r" if i % 7 == 0 else "")
        writer.writerow([r["id"], r["ts"], r["model"], r["source"], json.dumps(r["vector"]), note])
        if i % 500 == 0:
            buffer.write("\r\n")  # a blank line is not a record
    dup = recs[10]
    writer.writerow([dup["id"], dup["ts"], dup["model"], dup["source"], json.dumps(dup["vector"]), "again"])
    writer.writerow(["late", recs[0]["ts"], "m0", "s", "[0.5]", 'a "short" one'])
    path = tmp_path / "blocks.csv"
    path.write_text(buffer.getvalue(), newline="")
    assert path.stat().st_size > 2 * 4 * 2**20  # more than two of the engine's 4 MiB blocks
    result = assert_agree(path, "csv", tmp_path / "out")
    assert result.reasons == {"duplicate_key": 1, "wrong_dimension": 1}
    assert native_rejects(result) == [(5000, "duplicate_key"), (5001, "wrong_dimension")]


def test_csv_with_vector_columns_round_trips(tmp_path: Path) -> None:
    recs = _good(25)
    header = ["id", "ts", "model", "source", *(f"v{i}" for i in range(DIMS))]
    lines = [",".join(header)]
    for r in recs:
        lines.append(",".join([r["id"], r["ts"], r["model"], r["source"], *(repr(v) for v in r["vector"])]))
    lines.append(",".join(["nan-row", recs[0]["ts"], "m0", "s", "nan", *["0.5"] * (DIMS - 1)]))
    path = tmp_path / "cols.csv"
    path.write_text("\n".join(lines) + "\n")
    result = assert_agree(path, "csv", tmp_path / "out")
    assert result.reasons == {"bad_type": 1}  # "nan" is not a JSON number
    expected = {k: (v[0], v[1], None) for k, v in _reference(tmp_path, recs).items()}
    assert rows_by_key(run_native(path, "csv", tmp_path / "again")[1]) == expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sidecar_kind", ["jsonl", "parquet"])
def test_npy_with_a_sidecar_round_trips(tmp_path: Path, dtype: type, sidecar_kind: str) -> None:
    recs = _good(30)
    matrix = np.asarray([r["vector"] for r in recs], dtype=dtype)
    if dtype is np.float64:
        matrix += 1e-12  # values that need rounding to float32
    matrix[3, 2] = np.nan
    path = tmp_path / "emb.npy"
    np.save(path, matrix)
    metas = [_meta(r) for r in recs]
    if sidecar_kind == "jsonl":
        write_lines(tmp_path / "emb.meta.jsonl", [json.dumps(m) for m in metas])
    else:
        pq.write_table(pa.Table.from_pylist(metas), tmp_path / "emb.meta.parquet")
    result = assert_agree(path, "npy", tmp_path / "out")
    assert result.reasons == {"non_finite": 1}
    got = rows_by_key(run_native(path, "npy", tmp_path / "again")[1])
    assert len(got) == 29
    for key, (vec, _, payload) in got.items():
        i = int(key[0].split("-")[1])
        assert vec == matrix[i].astype(np.float32).tobytes()
        assert payload == {"extra": i}


def test_npy_blocks_with_and_without_rejects_round_trip(tmp_path: Path) -> None:
    """A float32 NPY of several read blocks: blocks whose rows are all good are used where they lie in
    the file, a block with a reject has its good rows copied out; both give the NPY's bits."""
    rng = np.random.default_rng(3)
    n = 3000  # the reader takes 1024 rows at a time: two clean blocks and one with rejects
    matrix = rng.standard_normal((n, DIMS)).astype(np.float32)
    matrix[1500, 1] = np.inf
    path = tmp_path / "big.npy"
    np.save(path, matrix)
    start = datetime(2026, 11, 18, tzinfo=UTC)
    metas = [
        {"id": f"v-{i}", "ts": (start + timedelta(minutes=i)).isoformat(), "model": "m0", "source": "s"}
        for i in range(n)
    ]
    metas[2000]["id"] = 7  # a bad type in the metadata
    write_lines(tmp_path / "big.meta.jsonl", [json.dumps(m) for m in metas])
    result = assert_agree(path, "npy", tmp_path / "out")
    assert result.reasons == {"non_finite": 1, "bad_type": 1}
    got = rows_by_key(run_native(path, "npy", tmp_path / "again")[1])
    assert len(got) == n - 2
    for key, (vec, _, _) in got.items():
        assert vec == matrix[int(key[0].split("-")[1])].tobytes()


@pytest.mark.parametrize("fixed", [False, True])
def test_parquet_input_round_trips(tmp_path: Path, fixed: bool) -> None:
    recs = _good(30)
    vtype = pa.list_(pa.float32(), DIMS) if fixed else pa.list_(pa.float32())
    table = pa.table(
        {
            "id": [r["id"] for r in recs],
            "ts": pa.array([1_790_000_000_000 + i for i in range(len(recs))], pa.int64()),
            "model": [r["model"] for r in recs],
            "vector": pa.array([r["vector"] for r in recs], vtype),
            "extra": [r["extra"] for r in recs],
        }
    )
    path = tmp_path / "in.parquet"
    pq.write_table(table, path)
    result = assert_agree(path, "parquet", tmp_path / "out")
    assert result.rows_good == 30
    got = rows_by_key(run_native(path, "parquet", tmp_path / "again")[1])
    assert sorted(v[0] for v in got.values()) == sorted(np.asarray(r["vector"], np.float32).tobytes() for r in recs)


def test_parquet_timestamps_and_null_vectors(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": ["a", "b", "c"],
            "ts": pa.array([1_790_000_000_000_000, 1_790_000_000_000_001, None], pa.timestamp("us", tz="UTC")),
            "vector": pa.array([[0.5] * DIMS, None, [0.5] * DIMS], pa.list_(pa.float64())),
        }
    )
    path = tmp_path / "ts.parquet"
    pq.write_table(table, path)
    result = assert_agree(path, "parquet", tmp_path / "out")
    assert result.reasons == {"missing_field": 2}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("no-sidecar.npy", "npy", "no sidecar"),
        ("ints.npy", "npy-int", "is not supported"),
        ("three-d.npy", "npy-3d", "must be 2-D"),
        ("short.npy", "npy-short-sidecar", "has 1 rows but"),
        ("fake.npy", b"not numpy at all", "not an NPY file"),
        ("novec.csv", b"id,ts\na,1\n", "no `vector` column"),
        ("novec.parquet", "parquet-novec", "no `vector` column"),
        ("garbage.parquet", b"PAR1 not really", "not a readable Parquet file"),
    ],
)
def test_files_that_cannot_be_converted_are_named(tmp_path: Path, name: str, content: Any, message: str) -> None:
    path = tmp_path / name
    if content == "npy":
        np.save(path, np.zeros((2, DIMS), np.float32))
    elif content == "npy-int":
        np.save(path, np.zeros((2, DIMS), np.int32))
    elif content == "npy-3d":
        np.save(path, np.zeros((2, 2, DIMS), np.float32))
    elif content == "npy-short-sidecar":
        np.save(path, np.zeros((2, DIMS), np.float32))
        write_lines(tmp_path / "short.meta.jsonl", [json.dumps({"id": "a", "ts": 1})])
    elif content == "parquet-novec":
        pq.write_table(pa.table({"id": ["a"]}), path)
    else:
        path.write_bytes(content)
    fmt = name.rsplit(".", 1)[1]
    with pytest.raises(InvalidLandingFileError, match=message) as caught:
        run_native(path, fmt, tmp_path / "out")
    assert name.split(".")[0] in str(caught.value) or "header" in str(caught.value)


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "x.txt", ["{}"])
    with pytest.raises(InvalidLandingFileError, match=r"unknown format \W?txt"):
        run_native(path, "txt", tmp_path)


def test_output_layout_is_what_the_table_needs(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [json.dumps(r) for r in _good(50, days=3)])
    result, rows = run_native(path, "jsonl", tmp_path / "out")
    files = result.data_files.to_pylist()
    assert [f["day"] for f in files] == ["2026-11-18", "2026-11-19", "2026-11-20"]
    # The pages spilled while row groups were open are gone (unnamed temporary files).
    assert sorted(p.name for p in (tmp_path / "out" / "data").iterdir()) == [f"ts_day={f['day']}" for f in files]
    assert all(len(list(Path(f["path"]).parent.iterdir())) == 1 for f in files)
    for f in files:
        assert Path(f["path"]).parent.name == f"ts_day={f['day']}"
        meta = pq.ParquetFile(f["path"]).metadata
        assert meta.num_rows == f["rows"] and os.path.getsize(f["path"]) == f["bytes"]
        assert meta.num_row_groups == math.ceil(f["rows"] / 7)
        element = next(
            meta.row_group(0).column(i)
            for i in range(meta.num_columns)
            if meta.row_group(0).column(i).path_in_schema.startswith("vector")
        )
        assert element.compression == "ZSTD"
        assert "BYTE_STREAM_SPLIT" in element.encodings
        ts = next(
            meta.row_group(0).column(i)
            for i in range(meta.num_columns)
            if meta.row_group(0).column(i).path_in_schema == "ts"
        )
        assert ts.statistics is not None and ts.statistics.has_min_max
        days = pq.read_table(f["path"]).column("ts").cast(pa.int64()).to_numpy() // 86_400_000_000
        assert len(set(days.tolist())) == 1
    from nextesy_assets.lib.schema import EMBEDDINGS_ARROW

    assert rows.schema.remove_metadata() == EMBEDDINGS_ARROW


def test_bounded_memory_on_a_large_file(tmp_path: Path) -> None:
    """Peak RSS of `nextesy convert` stays near the row-group size, far below the input size."""
    dims = 768
    rng = np.random.default_rng(0)
    # More distinct vectors than a data page holds (2,048 rows), so that the pages compress as real
    # embeddings do (about 0.85x raw) rather than to nothing.
    vectors = [json.dumps(v) for v in rng.standard_normal((4096, dims)).round(7).tolist()]
    path = tmp_path / "large.jsonl"
    rows = 70_000
    with open(path, "w") as out:
        for i in range(rows):
            out.write(f'{{"id":"r{i}","ts":{1_790_000_000_000 + i * 1000},"vector":{vectors[i % 4096]}}}\n')
    size = path.stat().st_size
    assert size > 500_000_000
    # VmHWM is the peak RSS of this process's own memory (reset by exec); ru_maxrss would carry the
    # high-water mark of the pytest process that forked it.
    script = (
        "import re, sys; from nextesy_assets.cli import main; "
        "main(sys.argv[1:], standalone_mode=False); "
        "status = open('/proc/self/status').read(); "
        "print('RSS', int(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1)) * 1024)"
    )
    command = ["convert", str(path), str(tmp_path / "out"), "--dims", str(dims)]
    done = subprocess.run([sys.executable, "-c", script, *command], capture_output=True, text=True, check=True)
    peak = int(done.stdout.split("RSS")[-1])
    assert f"{rows} records -> {rows} rows" in done.stdout
    # The interpreter and pyarrow take about 130 MB, the engine about one 128 MB row group of raw
    # rows: 200-260 MB on a quiet machine, and once 312 MB while other jobs ran beside the tests (the
    # peak counts mapped library pages and whole huge pages). Holding the encoded pages in memory as well
    # took the peak to about 390 MB, reading the whole input to over 600 MB.
    assert peak < 350_000_000, f"peak RSS {peak / 1e6:.0f} MB for a {size / 1e6:.0f} MB input"
    path.unlink()


def test_convert_command_does_not_import_dagster(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [*(json.dumps(r) for r in _good(5)), BAD_LINES[0][0]])
    script = (
        "import sys; from nextesy_assets.cli import main; main(sys.argv[1:], standalone_mode=False); "
        "print('dagster' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "convert", str(path), str(tmp_path / "out"), "--dims", str(DIMS)],
        capture_output=True,
        text=True,
        check=True,
    )
    summary, imported = done.stdout.strip().splitlines()
    assert imported == "False"
    assert "6 records -> 5 rows in 3 file(s)" in summary and "malformed_record=1" in summary
    assert (tmp_path / "out" / "rejects.parquet").exists()


def test_python_engine_of_the_convert_command_gives_the_same_files(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [json.dumps(r) for r in _good(20)] + [BAD_LINES[3][0]])
    nextesy = Path(sys.executable).parent / "nextesy"
    tables = []
    for engine in ("native", "python"):
        out = tmp_path / engine
        subprocess.run(
            [nextesy, "convert", path, out, "--dims", str(DIMS), "--engine", engine], check=True, capture_output=True
        )
        tables.append(pa.concat_tables(pq.read_table(f) for f in sorted(out.glob("ts_day=*/*.parquet"))))
        assert pq.read_table(out / "rejects.parquet").column("reason").to_pylist() == ["missing_field"]
    assert len(tables[0]) == 20
    assert rows_by_key(tables[0]) == rows_by_key(tables[1])
