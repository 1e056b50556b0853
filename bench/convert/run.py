"""Conversion benchmark: `nextesy convert` against the peer tools, in one run on the same files.

    .venv/bin/python bench/convert/run.py --rows 200000 --wait-idle 20   # all formats and tools, best of 1
    .venv/bin/python bench/convert/run.py --rows 20000 --formats jsonl --tools nextesy,duckdb-polars --repeat 3

Generates the inputs first if they are missing (bench/convert/generate.py; under bench/data/ by default),
then, for each format, converts the same file to Parquet with every tool, each in a fresh subprocess so
its peak RSS can be read from the kernel (wait4's ru_maxrss), with a warm page cache. Rounds are
interleaved (every tool once, then again) and the best wall time of --repeat is kept; these machines are
shared and noisy, so read the ratios, measured in one run, rather than absolute numbers; each run records
the share of the CPUs other processes used meanwhile (`others_cpu_share`), and --wait-idle waits for quiet.

Every tool writes the same columns (id, ts as timestamp[us, UTC], model, source, vector as list<float32>),
with zstd level 1 and BYTE_STREAM_SPLIT for the floats where the tool can write it, and the same row-group
size where it can be set. Each output is checked: its row count (a wrong count is reported as a failure,
not a number), and once per tool every vector bit for bit against the NPY and ts/model/source against the
sidecar. Wall time is the whole process (interpreter start and imports included, as for the CLI);
`work_s` is the conversion alone as the peer worker timed it.

Writes bench/results/convert.json and prints a short table. `nextesy convert` is skipped with a note
when the installed CLI does not have it; `--engine python` (the oracle) runs on JSONL only, on the first
--oracle-rows rows (it is slow), and its throughput is compared per row.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate  # the sibling script, found through the path entry above

ROOT = generate.ROOT
RESULTS = ROOT / "bench" / "results" / "convert.json"
NEXTESY = Path(sys.executable).with_name("nextesy")
ZSTD_LEVEL = 1
ROW_GROUP_BYTES = 128 * 1024 * 1024  # the project's default target (NEXTESY_ROW_GROUP_BYTES)
TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%:z"  # Polars' spelling of ISO-8601 with an offset

# ---------------------------------------------------------------------------------------------------------
# Peer workers: each runs in its own process (`run.py --worker NAME ...`) and writes OUT/part-0.parquet.
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    input: Path
    out: Path  # a directory
    dims: int
    row_group_rows: int

    @property
    def file(self) -> Path:
        return self.out / "part-0.parquet"

    @property
    def sidecar(self) -> Path:
        return self.input.with_suffix(".meta.jsonl")


def _arrow_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("model", pa.string()),
            ("source", pa.string()),
            ("vector", pa.list_(pa.float32())),
        ]
    )


def _pq_write_options(job: Job) -> dict[str, Any]:
    """pyarrow's writer settings, the same as the project's own Python writer."""
    return {
        "compression": "zstd",
        "compression_level": ZSTD_LEVEL,
        "use_dictionary": ["model", "source"],
        "column_encoding": {"vector.list.element": "BYTE_STREAM_SPLIT"},
        "write_statistics": True,
        "row_group_size": job.row_group_rows,
    }


def _pq_writer(job: Job, schema: Any) -> Any:
    import pyarrow.parquet as pq

    options = _pq_write_options(job)
    del options["row_group_size"]  # ParquetWriter takes it per write_table call
    return pq.ParquetWriter(job.file, schema, **options)


def _polars_write(job: Job) -> dict[str, Any]:
    # Polars' native writer has no BYTE_STREAM_SPLIT encoder (only a decoder): plain floats + zstd.
    return {"compression": "zstd", "compression_level": ZSTD_LEVEL, "row_group_size": job.row_group_rows}


def _polars_strings() -> dict[str, Any]:
    import polars as pl

    return {"id": pl.String, "ts": pl.String, "model": pl.String, "source": pl.String}


def _polars_ts() -> Any:
    import polars as pl

    return pl.col("ts").str.to_datetime(TS_FORMAT, time_unit="us", time_zone="UTC")


def _duckdb_select(job: Job, fmt: str) -> str:
    path = str(job.input).replace("'", "''")
    if fmt == "jsonl":
        return (
            f"SELECT id, ts, model, source, vector FROM read_json('{path}', format='newline_delimited', "
            "columns={id: 'VARCHAR', ts: 'TIMESTAMPTZ', model: 'VARCHAR', source: 'VARCHAR', vector: 'FLOAT[]'})"
        )
    return (
        "SELECT id, ts::TIMESTAMPTZ AS ts, model, source, vector::FLOAT[] AS vector "
        f"FROM read_csv('{path}', header=true, quote='\"', delim=',', "
        "columns={id: 'VARCHAR', ts: 'VARCHAR', model: 'VARCHAR', source: 'VARCHAR', vector: 'VARCHAR'})"
    )


def _duckdb_connect() -> Any:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _duckdb_copy(job: Job, fmt: str) -> None:
    target = str(job.file).replace("'", "''")
    # PARQUET_VERSION V2 is what makes DuckDB write BYTE_STREAM_SPLIT for floats (V1 writes them PLAIN).
    _duckdb_connect().execute(
        f"COPY ({_duckdb_select(job, fmt)}) TO '{target}' (FORMAT parquet, COMPRESSION zstd, "
        f"COMPRESSION_LEVEL {ZSTD_LEVEL}, PARQUET_VERSION V2, ROW_GROUP_SIZE {job.row_group_rows})"
    )


def _duckdb_then_polars(job: Job, fmt: str) -> None:
    import polars as pl

    table = _duckdb_connect().sql(_duckdb_select(job, fmt)).fetch_arrow_table()
    frame = pl.from_arrow(table)
    del table
    assert isinstance(frame, pl.DataFrame)
    frame.write_parquet(job.file, **_polars_write(job))


def w_jsonl_duckdb_polars(job: Job) -> None:
    _duckdb_then_polars(job, "jsonl")


def w_jsonl_duckdb(job: Job) -> None:
    _duckdb_copy(job, "jsonl")


def _ndjson_schema(dims: int) -> dict[str, Any]:
    import polars as pl

    return {**_polars_strings(), "vector": pl.List(pl.Float32)}


def w_jsonl_polars_stream(job: Job) -> None:
    import polars as pl

    frame = pl.scan_ndjson(job.input, schema=_ndjson_schema(job.dims)).with_columns(_polars_ts())
    frame.sink_parquet(job.file, **_polars_write(job))


def w_jsonl_polars_eager(job: Job) -> None:
    import polars as pl

    frame = pl.read_ndjson(job.input, schema=_ndjson_schema(job.dims)).with_columns(_polars_ts())
    frame.write_parquet(job.file, **_polars_write(job))


def w_jsonl_pyarrow(job: Job) -> None:
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    table = pj.read_json(job.input, parse_options=pj.ParseOptions(explicit_schema=_arrow_schema()))
    pq.write_table(table, job.file, **_pq_write_options(job))


def _orjson_loop(job: Job, records: Callable[[], Any]) -> None:
    """The hand-written baseline: parse each record in Python, floats into NumPy, write chunk by chunk."""
    import numpy as np
    import pyarrow as pa

    schema = _arrow_schema()
    writer = _pq_writer(job, schema)
    n = job.row_group_rows
    columns: dict[str, list[str]] = {"id": [], "ts": [], "model": [], "source": []}
    matrix = np.empty((n, job.dims), dtype=np.float32)
    offsets = pa.array(np.arange(0, matrix.size + 1, job.dims, dtype=np.int32))

    def flush(count: int) -> None:
        if not count:
            return
        vector = pa.ListArray.from_arrays(offsets[: count + 1], pa.array(matrix[:count].reshape(-1)))
        arrays = [pa.array(columns[name]) for name in ("id", "ts", "model", "source")]
        arrays[1] = arrays[1].cast(schema.field("ts").type)
        writer.write_table(pa.Table.from_arrays([*arrays, vector], schema=schema), row_group_size=n)
        for values in columns.values():
            values.clear()

    count = 0
    for record_id, ts, model, source, vector in records():
        columns["id"].append(record_id)
        columns["ts"].append(ts)
        columns["model"].append(model)
        columns["source"].append(source)
        matrix[count] = vector  # NumPy rounds each Python float (a double) to float32
        count += 1
        if count == n:
            flush(count)
            count = 0
    flush(count)
    writer.close()


def w_jsonl_python_orjson(job: Job) -> None:
    import orjson

    def records() -> Any:
        with job.input.open("rb") as handle:
            for line in handle:
                r = orjson.loads(line)
                yield r["id"], r["ts"], r["model"], r["source"], r["vector"]

    _orjson_loop(job, records)


def w_csv_polars_eager(job: Job) -> None:
    import polars as pl

    frame = pl.read_csv(job.input, schema={**_polars_strings(), "vector": pl.String})
    frame = frame.with_columns(_polars_ts(), pl.col("vector").str.json_decode(pl.List(pl.Float32)))
    frame.write_parquet(job.file, **_polars_write(job))


def w_csv_polars_stream(job: Job) -> None:
    import polars as pl

    frame = pl.scan_csv(job.input, schema={**_polars_strings(), "vector": pl.String})
    frame = frame.with_columns(_polars_ts(), pl.col("vector").str.json_decode(pl.List(pl.Float32)))
    frame.sink_parquet(job.file, **_polars_write(job))


def w_csv_duckdb(job: Job) -> None:
    _duckdb_copy(job, "csv")


def w_csv_duckdb_polars(job: Job) -> None:
    _duckdb_then_polars(job, "csv")


def w_csv_pyarrow(job: Job) -> None:
    """pyarrow's CSV reader, then the vector text split and cast to float32 by Arrow compute, streamed."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    schema = _arrow_schema()
    types = {name: pa.string() for name in ("id", "ts", "model", "source", "vector")}
    reader = pcsv.open_csv(
        job.input,
        read_options=pcsv.ReadOptions(block_size=16 << 20),
        convert_options=pcsv.ConvertOptions(column_types=types),
    )
    writer = _pq_writer(job, schema)
    for batch in reader:
        text = pc.utf8_slice_codeunits(batch.column("vector"), 1, -1)  # strip [ and ]
        vector = pc.split_pattern(text, ",").cast(schema.field("vector").type)
        ts = batch.column("ts").cast(schema.field("ts").type)
        arrays = [batch.column("id"), ts, batch.column("model"), batch.column("source"), vector]
        writer.write_table(pa.Table.from_arrays(arrays, schema=schema), row_group_size=job.row_group_rows)
    writer.close()


def w_csv_python_orjson(job: Job) -> None:
    import csv

    import orjson

    csv.field_size_limit(1 << 30)

    def records() -> Any:
        with job.input.open(newline="") as handle:
            rows = csv.reader(handle)
            next(rows)
            for record_id, ts, model, source, vector in rows:
                yield record_id, ts, model, source, orjson.loads(vector)

    _orjson_loop(job, records)


def w_npy_polars(job: Job) -> None:
    import numpy as np
    import polars as pl

    matrix = np.load(job.input)
    meta = pl.read_ndjson(job.sidecar, schema=_polars_strings()).with_columns(_polars_ts())
    # A 2-D array becomes an Array(Float32, dims) column; cast to List for the table's list<float32>.
    vector = pl.Series("vector", matrix).cast(pl.List(pl.Float32))
    del matrix
    meta.with_columns(vector).write_parquet(job.file, **_polars_write(job))


def w_npy_pyarrow(job: Job) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.json as pj

    schema = _arrow_schema()
    meta_schema = pa.schema([schema.field(name) for name in ("id", "ts", "model", "source")])
    meta = pj.read_json(job.sidecar, parse_options=pj.ParseOptions(explicit_schema=meta_schema))
    matrix = np.load(job.input, mmap_mode="r")
    writer = _pq_writer(job, schema)
    n = job.row_group_rows
    for start in range(0, matrix.shape[0], n):
        block = np.ascontiguousarray(matrix[start : start + n])
        offsets = pa.array(np.arange(0, block.size + 1, job.dims, dtype=np.int32))
        vector = pa.ListArray.from_arrays(offsets, pa.array(block.reshape(-1)))
        part = meta.slice(start, len(block))
        writer.write_table(
            pa.Table.from_arrays([*part.columns, vector], schema=schema), row_group_size=job.row_group_rows
        )
    writer.close()


WORKERS: dict[str, Callable[[Job], None]] = {
    name[2:].replace("_", "-"): fn for name, fn in globals().items() if name.startswith("w_")
}


def worker_main(name: str, job: Job) -> None:
    started = time.perf_counter()
    WORKERS[name](job)
    print(json.dumps({"work_s": time.perf_counter() - started}))


# ---------------------------------------------------------------------------------------------------------
# The harness.
# ---------------------------------------------------------------------------------------------------------

# Tools per format, in table order. `nextesy` and `nextesy-python` are the project's CLI; the rest are peers.
TOOLS: dict[str, list[str]] = {
    "jsonl": [
        "nextesy",
        "nextesy-python",
        "duckdb-polars",
        "polars-stream",
        "polars-eager",
        "duckdb",
        "pyarrow",
        "python-orjson",
    ],
    "csv": ["nextesy", "duckdb-polars", "polars-stream", "polars-eager", "duckdb", "pyarrow", "python-orjson"],
    "npy": ["nextesy", "polars", "pyarrow"],
}
OURS = {"nextesy", "nextesy-python"}


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    work_s: float | None
    loadavg_before: float
    # CPU the rest of the machine used during the run (all busy CPU time minus the tool's), as a share of
    # wall time x cores: how much other work competed with this number.
    others_cpu_share: float = 0.0
    waited_for_idle_s: float = 0.0


@dataclass
class Result:
    format: str
    tool: str
    status: str = "ok"  # ok | unavailable | failed | wrong_rows
    note: str = ""
    command: list[str] = field(default_factory=list)
    output_dir: str = ""
    rows: int = 0
    input_bytes: int = 0
    runs: list[Run] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)


def nextesy_support() -> dict[str, str | None]:
    """Why each of our CLI tools cannot run here, or None when it can."""
    if not NEXTESY.exists():
        return dict.fromkeys(OURS, f"{NEXTESY} not found")
    try:
        out = subprocess.run([str(NEXTESY), "convert", "--help"], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return dict.fromkeys(OURS, "`nextesy convert --help` timed out")
    if out.returncode != 0:
        first = (out.stderr.strip().splitlines() or ["?"])[-1]
        return dict.fromkeys(OURS, f"`nextesy convert` not available in this build ({first})")
    return {
        "nextesy": None,
        "nextesy-python": None if "--engine" in out.stdout else "`nextesy convert` has no --engine option",
    }


def command(fmt: str, tool: str, job: Job) -> list[str]:
    if tool in OURS:
        cmd = [str(NEXTESY), "convert", str(job.input), str(job.out), "--dims", str(job.dims)]
        return [*cmd, "--engine", "python"] if tool == "nextesy-python" else cmd
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        f"{fmt}-{tool}",
        "--input",
        str(job.input),
        "--out",
        str(job.out),
        "--dims",
        str(job.dims),
        "--row-group-rows",
        str(job.row_group_rows),
    ]


# Linux records a child's ru_maxrss as at least its parent's RSS at fork/exec time (the old mm's high-water
# mark carries over exec), and this harness holds hundreds of MB. So each tool is started by a tiny launcher
# (`python -I -S`, about 10 MB), which spawns it, reaps it with wait4 and reports the tool's own numbers.
LAUNCHER = """
import json, os, sys, time
report, cmd = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.posix_spawn(cmd[0], cmd, os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(report, "w") as f:
    json.dump({"code": os.waitstatus_to_exitcode(status), "wall_s": wall, "maxrss_kb": usage.ru_maxrss,
               "cpu_s": usage.ru_utime + usage.ru_stime}, f)
"""


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores, from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_for_idle(limit_s: float, busy_share: float = 0.15) -> float:
    """Wait (at most `limit_s`) until other work uses under `busy_share` of the machine over one second."""
    started = time.perf_counter()
    cores = os.cpu_count() or 1
    while time.perf_counter() - started < limit_s:
        before = busy_cpu_s()
        time.sleep(1.0)
        if (busy_cpu_s() - before) / cores < busy_share:
            break
    return time.perf_counter() - started


def measure(cmd: list[str], log: Path, timeout: float) -> tuple[int, Run, str]:
    """Run `cmd` in a fresh process; its own wall time, CPU time and peak RSS (ru_maxrss, from wait4)."""
    load = os.getloadavg()[0]
    busy_before = busy_cpu_s()
    report = log.with_suffix(".rusage.json")
    report.unlink(missing_ok=True)
    launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(report), *cmd]
    with log.open("w") as sink:
        proc = subprocess.Popen(launcher, stdout=subprocess.PIPE, stderr=sink, text=True, start_new_session=True)
        timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        stdout = proc.stdout.read() if proc.stdout else ""
        proc.wait()
        timer.cancel()
        sink.write(stdout)
    busy = busy_cpu_s() - busy_before
    if not report.exists():
        return proc.returncode or -9, Run(timeout, 0.0, 0.0, None, load), stdout
    usage = json.loads(report.read_text())
    work = None
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith('{"work_s"'):
            work = json.loads(line)["work_s"]
            break
    run = Run(
        wall_s=usage["wall_s"],
        cpu_s=usage["cpu_s"],
        peak_rss_mb=usage["maxrss_kb"] / 1024,
        work_s=work,
        loadavg_before=load,
        others_cpu_share=max(0.0, busy - usage["cpu_s"]) / (usage["wall_s"] * (os.cpu_count() or 1)),
    )
    return usage["code"], run, stdout


def data_files(out: Path) -> list[Path]:
    """The Parquet data files a tool wrote (anything named like a rejects file is not data)."""
    return sorted(p for p in out.rglob("*.parquet") if "reject" not in p.name.lower())


def count_rows(out: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in data_files(out))


def output_metrics(out: Path, rows: int, dims: int) -> dict[str, Any]:
    import pyarrow.parquet as pq

    files = data_files(out)
    total = sum(p.stat().st_size for p in files)
    vector_bytes = 0
    encodings: set[str] = set()
    codecs: set[str] = set()
    row_groups = 0
    vector_type = ""
    for path in files:
        meta = pq.read_metadata(path)
        vector_type = str(meta.schema.to_arrow_schema().field("vector").type)
        row_groups += meta.num_row_groups
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                column = group.column(c)
                if column.path_in_schema.startswith("vector"):
                    vector_bytes += column.total_compressed_size
                    encodings.update(column.encodings)
                    codecs.add(column.compression)
    raw = rows * dims * 4
    others = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p not in files)
    return {
        "data_files": len(files),
        "other_files": others,
        "row_groups": row_groups,
        "output_bytes": total,
        "output_bytes_per_vector": round(total / rows, 1) if rows else None,
        "output_over_raw_float32": round(total / raw, 4) if raw else None,
        "vector_column_over_raw_float32": round(vector_bytes / raw, 4) if raw else None,
        "vector_encodings": sorted(encodings),
        "vector_codecs": sorted(codecs),
        "vector_type": vector_type,
    }


class Reference:
    """The generated values, to check outputs against: vectors from the NPY, other fields from the sidecar."""

    def __init__(self, npy: Path, sidecar: Path) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.json as pj

        self.vectors = np.load(npy, mmap_mode="r")
        schema = pa.schema([("id", pa.string()), ("ts", pa.string()), ("model", pa.string()), ("source", pa.string())])
        meta = pj.read_json(sidecar, parse_options=pj.ParseOptions(explicit_schema=schema))
        self.ts = meta.column("ts").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
        self.model = meta.column("model").to_numpy(zero_copy_only=False)
        self.source = meta.column("source").to_numpy(zero_copy_only=False)

    def check(self, out: Path) -> dict[str, Any]:
        """Every row of the output against the generated one with the same id: vector bits and fields."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        dims = self.vectors.shape[1]
        seen = np.zeros(len(self.ts), dtype=bool)
        bad_vectors = bad_fields = duplicates = 0
        for path in data_files(out):
            for batch in pq.ParquetFile(path).iter_batches(batch_size=16_384):
                index = pc.utf8_slice_codeunits(batch.column("id"), 4).cast(pa.int64()).to_numpy()
                duplicates += int(seen[index].sum())
                seen[index] = True
                vector = batch.column("vector")
                values = vector.flatten().to_numpy(zero_copy_only=False)
                lengths = pc.list_value_length(vector).to_numpy(zero_copy_only=False)
                if values.dtype != np.float32 or (lengths != dims).any():
                    bad_vectors += len(index)
                else:
                    got = values.reshape(-1, dims).view(np.uint32)
                    want = self.vectors[index]
                    bad_vectors += int((got != want.view(np.uint32)).any(axis=1).sum())
                ts = batch.column("ts")
                # An instant (any unit, any zone spelling) is compared in UTC microseconds; text or a naive
                # timestamp has not been converted and counts as wrong.
                if pa.types.is_timestamp(ts.type) and ts.type.tz is not None:
                    utc = ts.cast(pa.timestamp("us", tz="UTC"))
                    ts_values = utc.cast(pa.int64()).to_numpy(zero_copy_only=False)
                    wrong = ts_values != self.ts[index]
                else:
                    wrong = np.ones(len(index), dtype=bool)
                wrong |= batch.column("model").to_numpy(zero_copy_only=False) != self.model[index]
                wrong |= batch.column("source").to_numpy(zero_copy_only=False) != self.source[index]
                bad_fields += int(wrong.sum())
        return {
            "vectors_bit_exact": bad_vectors == 0,
            "rows_with_wrong_vector": bad_vectors,
            "rows_with_wrong_ts_model_or_source": bad_fields,
            "duplicate_ids": duplicates,
        }


def warm(paths: list[Path]) -> None:
    """Read the inputs once so every tool starts with them in the page cache."""
    for path in paths:
        with path.open("rb") as handle:
            while handle.read(64 << 20):
                pass


def head_jsonl(source: Path, rows: int) -> Path:
    """The first `rows` lines of a JSONL file, for the slow oracle."""
    target = source.with_name(f"{source.stem}.head{rows}.jsonl")
    if not target.exists():
        with source.open("rb") as src, target.with_suffix(".partial").open("wb") as dst:
            for _, line in zip(range(rows), src, strict=False):
                dst.write(line)
        target.with_suffix(".partial").replace(target)
    return target


def machine() -> dict[str, Any]:
    import duckdb
    import numpy
    import orjson
    import pyarrow

    try:
        import polars

        polars_version = polars.__version__
    except ImportError:
        polars_version = None
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line), "0")

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    version = subprocess.run([str(NEXTESY), "--version"], capture_output=True, text=True) if NEXTESY.exists() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem) / 1024**2, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "nextesy": version.stdout.strip() if version else None,
            "duckdb": duckdb.__version__,
            "polars": polars_version,
            "pyarrow": pyarrow.__version__,
            "numpy": numpy.__version__,
            "orjson": orjson.__version__,
        },
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def best(result: Result) -> Run | None:
    return min(result.runs, key=lambda r: r.wall_s) if result.runs and result.status == "ok" else None


def summarise(result: Result) -> dict[str, Any]:
    data = asdict(result)
    run = best(result)
    if run:
        data["best"] = {
            "wall_s": round(run.wall_s, 3),
            "work_s": round(run.work_s, 3) if run.work_s is not None else None,
            "cpu_s": round(run.cpu_s, 2),
            "cores_busy": round(run.cpu_s / run.wall_s, 2),
            "rows_per_s": round(result.rows / run.wall_s),
            "input_mb_per_s": round(result.input_bytes / 1e6 / run.wall_s, 1),
            "peak_rss_mb": round(max(r.peak_rss_mb for r in result.runs), 1),
            "others_cpu_share": round(run.others_cpu_share, 2),
        }
    for r in data["runs"]:
        for key, value in r.items():
            if isinstance(value, float):
                r[key] = round(value, 3)
    return data


def ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per format: every tool against the fastest peer (throughput in rows/s) and against Polars streaming (RSS)."""
    out: dict[str, Any] = {}
    for fmt in TOOLS:
        ok = [r for r in results if r["format"] == fmt and "best" in r]
        peers = [r for r in ok if r["tool"] not in OURS]
        if not peers:
            continue
        fastest = max(peers, key=lambda r: r["best"]["rows_per_s"])
        stream = next((r for r in peers if r["tool"] == "polars-stream"), None)
        leanest = min(peers, key=lambda r: r["best"]["peak_rss_mb"])
        out[fmt] = {
            "fastest_peer": fastest["tool"],
            "leanest_peer": leanest["tool"],
            "tools": {
                r["tool"]: {
                    "throughput_vs_fastest_peer": round(r["best"]["rows_per_s"] / fastest["best"]["rows_per_s"], 3),
                    "peak_rss_vs_polars_stream": round(r["best"]["peak_rss_mb"] / stream["best"]["peak_rss_mb"], 3)
                    if stream
                    else None,
                    "output_vs_fastest_peer": round(
                        r["metrics"]["output_bytes_per_vector"] / fastest["metrics"]["output_bytes_per_vector"], 3
                    ),
                }
                for r in ok
            },
        }
    return out


def table(results: list[dict[str, Any]], ratio: dict[str, Any]) -> str:
    head = (
        f"{'format':6} {'tool':15} {'rows':>7} {'wall s':>7} {'rows/s':>8} {'in MB/s':>8} {'cpu s':>6} {'cores':>5} "
        f"{'others':>6} {'RSS MB':>7} {'B/vec':>6} {'/raw':>6} {'BSS':>3} {'exact':>5} {'vs best':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        if "best" not in r:
            lines.append(f"{r['format']:6} {r['tool']:15} {r['status'].upper()}: {r['note']}")
            continue
        b, m = r["best"], r["metrics"]
        vs = ratio.get(r["format"], {}).get("tools", {}).get(r["tool"], {}).get("throughput_vs_fastest_peer")
        exact = r["check"].get("vectors_bit_exact")
        lines.append(
            f"{r['format']:6} {r['tool']:15} {r['rows']:>7} {b['wall_s']:>7.2f} {b['rows_per_s']:>8} "
            f"{b['input_mb_per_s']:>8.1f} {b['cpu_s']:>6.1f} {b['cores_busy']:>5.2f} {b['others_cpu_share']:>6.0%} "
            f"{b['peak_rss_mb']:>7.0f} {m['output_bytes_per_vector']:>6.0f} {m['output_over_raw_float32']:>6.3f} "
            f"{'yes' if 'BYTE_STREAM_SPLIT' in m['vector_encodings'] else 'no':>3} "
            f"{'-' if exact is None else ('yes' if exact else 'NO'):>5} {vs if vs is not None else '':>7}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dims", type=int, default=768)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--formats", default="jsonl,csv,npy")
    parser.add_argument("--tools", default="all", help="comma-separated tool names (default: every one)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool, interleaved; the best is kept")
    parser.add_argument("--data-dir", type=Path, default=generate.DEFAULT_DATA_DIR)
    parser.add_argument("--oracle-rows", type=int, default=20_000, help="rows the Python oracle converts")
    parser.add_argument("--timeout", type=float, default=900, help="seconds before a tool's run is killed")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="S",
        help="before each run, wait up to S seconds for other work to leave the CPUs (mostly) idle",
    )
    parser.add_argument("--no-verify-values", action="store_true", help="check row counts only")
    parser.add_argument("--keep-outputs", action="store_true", help="leave the Parquet outputs in DATA_DIR/out")
    parser.add_argument("--results", type=Path, default=RESULTS)
    # Internal: run one peer worker (how the harness starts each measured process).
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--row-group-rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        args.out.mkdir(parents=True, exist_ok=True)
        worker_main(args.worker, Job(args.input, args.out, args.dims, args.row_group_rows))
        return

    formats = [f for f in args.formats.split(",") if f]
    if unknown := set(formats) - set(TOOLS):
        parser.error(f"unknown formats {sorted(unknown)}; choose from {list(TOOLS)}")
    every = {t for tools in TOOLS.values() for t in tools}
    chosen = every if args.tools == "all" else set(args.tools.split(","))
    if unknown := chosen - every:
        parser.error(f"unknown tools {sorted(unknown)}; choose from {sorted(every)}")

    started_at = dt.datetime.now(dt.UTC)
    files = generate.paths(args.data_dir, args.rows, args.dims, args.seed)
    missing = tuple(
        f for f in {*formats, "npy"} if not files[f].exists() or (f == "npy" and not files["meta"].exists())
    )
    if missing:
        print(f"generating {args.rows} x {args.dims} as {', '.join(sorted(missing))} ...", file=sys.stderr)
        generate.generate(args.rows, args.dims, args.seed, args.data_dir, tuple(sorted(missing)))
    oracle_input = head_jsonl(files["jsonl"], args.oracle_rows) if args.oracle_rows < args.rows else files["jsonl"]
    reference = Reference(files["npy"], files["meta"]) if not args.no_verify_values else None
    support = nextesy_support()
    row_group_rows = max(1, ROW_GROUP_BYTES // (args.dims * 4 + 64))
    out_root = args.data_dir / "out"
    logs = args.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    results: list[Result] = []
    for fmt in formats:
        for tool in TOOLS[fmt]:
            if tool not in chosen:
                continue
            path = oracle_input if tool == "nextesy-python" else files[fmt]
            rows = args.oracle_rows if tool == "nextesy-python" and args.oracle_rows < args.rows else args.rows
            size = path.stat().st_size + (files["meta"].stat().st_size if fmt == "npy" else 0)
            result = Result(fmt, tool, rows=rows, input_bytes=size)
            job = Job(path, out_root / fmt / tool, args.dims, row_group_rows)
            result.command = command(fmt, tool, job)
            result.output_dir = str(job.out)
            if tool in OURS and support[tool]:
                result.status, result.note = "unavailable", str(support[tool])
            elif tool not in OURS and "polars" in tool and not _importable("polars"):
                result.status, result.note = "unavailable", "polars is not installed (pip install polars==2.1.0)"
            elif tool == "nextesy-python" and rows < args.rows:
                result.note = f"Python oracle on the first {rows} of {args.rows} rows (it is slow); compare rows/s"
            results.append(result)

    for round_ in range(args.repeat):
        for fmt in formats:
            if any(r.format == fmt and r.status == "ok" for r in results):
                warm([files[fmt], *([files["meta"]] if fmt == "npy" else [])])
            for result in results:
                if result.format != fmt or result.status != "ok":
                    continue
                out = Path(result.output_dir)
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                log = logs / f"{fmt}-{result.tool}-{round_}.log"
                print(f"[{round_ + 1}/{args.repeat}] {fmt:5} {result.tool} ...", end=" ", file=sys.stderr, flush=True)
                waited = wait_for_idle(args.wait_idle) if args.wait_idle > 0 else 0.0
                code, run, stdout = measure(result.command, log, args.timeout)
                run.waited_for_idle_s = waited
                if code != 0:
                    tail = log.read_text().strip().splitlines()[-3:]
                    result.status, result.note = "failed", f"exit {code}: " + " | ".join(tail)
                    print(result.note, file=sys.stderr)
                    continue
                got = count_rows(out)
                if got != result.rows:
                    result.status, result.note = "wrong_rows", f"wrote {got} rows, expected {result.rows}"
                    print(result.note, file=sys.stderr)
                    continue
                result.runs.append(run)
                if result.tool in OURS and stdout.strip():
                    result.metrics["summary_line"] = stdout.strip().splitlines()[-1]
                if round_ == 0:
                    result.metrics.update(output_metrics(out, result.rows, args.dims))
                    if reference:
                        result.check = reference.check(out)
                print(
                    f"{run.wall_s:.2f} s, {run.peak_rss_mb:.0f} MB, others used {run.others_cpu_share:.0%} of the CPUs",
                    file=sys.stderr,
                )
                if not args.keep_outputs and round_ == args.repeat - 1:
                    shutil.rmtree(out, ignore_errors=True)

        write_report(args, results, started_at, files, row_group_rows, rounds_done=round_ + 1)

    summaries = [summarise(r) for r in results]
    print(table(summaries, ratios(summaries)))
    print(f"\nwrote {args.results}")


def write_report(
    args: argparse.Namespace,
    results: list[Result],
    started_at: dt.datetime,
    files: dict[str, Path],
    row_group_rows: int,
    rounds_done: int,
) -> None:
    """Write the JSON results; called after every round, so an interrupted run keeps what it measured."""
    summaries = [summarise(r) for r in results]
    report = {
        "benchmark": "convert",
        "how_to_rerun": ".venv/bin/python bench/convert/run.py " + " ".join(sys.argv[1:]),
        "command_line": [sys.executable, *sys.argv],
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "rounds_done": rounds_done,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
        "params": {
            "rows": args.rows,
            "dims": args.dims,
            "seed": args.seed,
            "repeat": args.repeat,
            "wait_idle_s": args.wait_idle,
            "oracle_rows": min(args.oracle_rows, args.rows),
            "row_group_rows": row_group_rows,
            "zstd_level": ZSTD_LEVEL,
            "inputs": {k: {"path": str(p), "bytes": p.stat().st_size} for k, p in files.items() if p.exists()},
        },
        "results": summaries,
        "ratios": ratios(summaries),
        "notes": NOTES,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    # Paths inside the checkout are written relative to it, so the file reads the same on every machine.
    args.results.write_text(json.dumps(report, indent=2).replace(str(ROOT) + "/", "") + "\n")


NOTES = [
    "wall_s is the whole process (start-up and imports included); work_s is the conversion as the peer "
    "worker timed it (not available for the CLI).",
    "Polars' native Parquet writer cannot write BYTE_STREAM_SPLIT (it only decodes it): its floats are "
    "PLAIN + zstd. DuckDB writes BYTE_STREAM_SPLIT only with PARQUET_VERSION V2 (set here).",
    "Peers write one file; nextesy convert writes one file per day(ts) plus a rejects file.",
    "Other work shares the 2 cores: others_cpu_share is the share of the machine's CPU that other processes "
    "used during a run; compare ratios from runs with little of it.",
]


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    main()
