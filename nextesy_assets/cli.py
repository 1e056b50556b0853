"""The `nextesy` command: demo data, an in-process sync, the UI, and a look at the tables."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import click

from .lib.errors import NextesyError
from .lib.settings import ENV_VARS, Settings


def _settings(home: str | None) -> Settings:
    if home:
        os.environ[ENV_VARS["home"]] = home
    try:
        return Settings.load()
    except NextesyError as exc:
        raise click.UsageError(str(exc)) from exc


home_option = click.option(
    "--home",
    metavar="DIR",
    help="Root of the embedded default (sets NEXTESY_HOME; default ./.nextesy).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nextesy")
def main() -> None:
    """Nextesy: ML embeddings from landing files to an Iceberg table and its verified GCS replica.

    Settings come from NEXTESY_* environment variables (see the README); with none set, everything
    lives under ./.nextesy and needs no cloud account and no server.
    """


@main.command()
@home_option
@click.option("--files", default=3, show_default=True, type=click.IntRange(1, 1000), help="Landing files to write.")
@click.option(
    "--rows", default=500, show_default=True, type=click.IntRange(1, 1_000_000), help="Good records per file."
)
@click.option("--seed", type=int, default=None, help="Random seed (default: the first new file's number).")
def demo(home: str | None, files: int, rows: int, seed: int | None) -> None:
    """Write sample landing files: structured embeddings over the last three days, with one bad record of
    each quarantine reason in the first file and the last file gzip-compressed.

    Existing files are kept; new ones continue the numbering, so each run adds new batches.
    """
    from .lib.demo import write_demo

    settings = _settings(home)
    written = write_demo(settings, files=files, rows=rows, seed=seed)
    for item in written:
        bad = f" ({item.bad_records} bad on purpose)" if item.bad_records else ""
        click.echo(f"wrote {item.uri}: {item.records} records{bad}")
    click.echo(f"{len(written)} landing files in {settings.landing_uri}; next: nextesy sync")


_CONVERT_FORMATS = ("jsonl", "jsonl.gz", "csv", "npy", "parquet")


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False))
@click.argument("out_dir", metavar="OUT_DIR", type=click.Path(file_okay=False))
@click.option("--dims", type=click.IntRange(1), default=None, help="Vector dimension [default: NEXTESY_DIMS or 768].")
@click.option(
    "--format", "fmt", type=click.Choice(_CONVERT_FORMATS), default=None, help="Input format [default: from the name]."
)
@click.option("--model", default=None, help="Model of records that name none [default: NEXTESY_DEFAULT_MODEL].")
@click.option("--sidecar", type=click.Path(exists=True, dir_okay=False), default=None, help="NPY metadata file.")
@click.option("--row-group-mb", type=click.IntRange(1), default=128, show_default=True, help="Target row group size.")
@click.option(
    "--threads", type=click.IntRange(0), default=0, show_default=True, help="Parse threads (0: one per core)."
)
@click.option(
    "--engine",
    type=click.Choice(["native", "python"]),
    default="native",
    show_default=True,
    help="native: the Rust engine; python: the reference implementation it is tested against.",
)
def convert(
    input_path: str,
    out_dir: str,
    dims: int | None,
    fmt: str | None,
    model: str | None,
    sidecar: str | None,
    row_group_mb: int,
    threads: int,
    engine: str,
) -> None:
    """Convert one landing file to Parquet laid out for the table: OUT_DIR/ts_day=YYYY-MM-DD/<name>.parquet
    (one file per day, zstd, byte-split floats) and OUT_DIR/rejects.parquet (rejected records with their
    reason, written when records were rejected). Needs no Dagster, catalog or cloud: the unit that can run anywhere.
    """
    import time
    from datetime import UTC, datetime

    # NumPy (imported by the Arrow bindings) would start BLAS threads that only compete with the engine's.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from .lib.batches import batch_id_for, detect_format
    from .lib.errors import InvalidLandingFileError, UnsupportedFormatError

    name = Path(input_path).name
    try:
        fmt = fmt or detect_format(name)
    except UnsupportedFormatError as exc:
        raise click.UsageError(f"{exc}; or pass --format") from None
    dims = dims or int(os.environ.get(ENV_VARS["dims"], "768"))
    model = model or os.environ.get(ENV_VARS["default_model"], "default")
    batch_id = batch_id_for(name, str(os.path.getsize(input_path)))
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rejects = out / "rejects.parquet"
    rejects.unlink(missing_ok=True)
    row_group_rows = max(1, row_group_mb * 1024 * 1024 // (dims * 4 + 64))
    try:
        if engine == "native":
            from .native import convert_file

            result = convert_file(
                input_path,
                fmt,
                out,
                rejects,
                dims=dims,
                batch_id=batch_id,
                ingested_at_us=int(datetime.now(UTC).timestamp() * 1_000_000),
                default_model=model,
                row_group_rows=row_group_rows,
                threads=threads,
                sidecar=sidecar,
            )
            rows_in, good, rejected, reasons = result.rows_in, result.rows_good, result.rows_rejected, result.reasons
            files = result.data_files.num_rows
            written = sum(result.data_files.column("bytes").to_pylist())
        else:
            from .lib.oracle_convert import convert_with_oracle

            rows_in, good, rejected, reasons, files, written = convert_with_oracle(
                input_path, fmt, out, rejects, dims, model, batch_id, row_group_rows, sidecar
            )
    except (InvalidLandingFileError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    elapsed = time.perf_counter() - started
    size_mb = os.path.getsize(input_path) / 1e6
    why = ", ".join(f"{k}={v}" for k, v in sorted(reasons.items()))
    click.echo(
        f"{name}: {rows_in} records -> {good} rows in {files} file(s), {written / max(good, 1):.0f} B/vector; "
        f"{rejected} rejected{f' ({why})' if why else ''}; {elapsed:.2f}s, {rows_in / elapsed:,.0f} rows/s, "
        f"{size_mb / elapsed:,.0f} MB/s [{engine}]"
    )


@main.command()
@home_option
def sync(home: str | None) -> None:
    """Ingest every new landing file (one batch each) into nextesy.embeddings and nextesy.quarantine,
    then bring the replica up to date. Runs are recorded in the Dagster instance the UI shows.

    Exits 1 if any batch or the replica failed. A repeat with nothing new changes nothing.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from .definitions import defs
    from .sync import dagster_instance, run_sync

    settings = _settings(home)
    console = Console(stderr=True)
    instance = dagster_instance(settings)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("scanning landing files", total=None)

        def started(registration, number, total):  # type: ignore[no-untyped-def]
            progress.update(task, total=total, completed=number - 1, description=f"batch {registration.key}")

        def done(outcome):  # type: ignore[no-untyped-def]
            progress.advance(task)
            status = "[green]ok[/]" if outcome.ok else f"[red]FAILED[/] {outcome.error}"
            console.print(
                f"{outcome.key}: {outcome.rows_committed} committed, {outcome.rows_quarantined} quarantined {status}",
                soft_wrap=True,  # paths and messages stay whole lines, easy to copy
            )

        try:
            summary = run_sync(settings, defs, instance, on_batch_start=started, on_batch_done=done)
        except NextesyError as exc:
            raise click.ClickException(str(exc)) from exc

    table = Table(title="nextesy sync", show_header=False)
    committed = sum(b.rows_committed for b in summary.batches)
    quarantined = sum(b.rows_quarantined for b in summary.batches)
    table.add_row("batches", f"{len(summary.batches)} new ({sum(not b.ok for b in summary.batches)} failed)")
    table.add_row("rows committed", str(committed))
    table.add_row("rows quarantined", str(quarantined))
    if summary.unsupported:
        table.add_row("skipped (unsupported)", ", ".join(summary.unsupported[:5]))
    table.add_row("source snapshot", str(summary.source_snapshot_id))
    replica = _replica_line(summary.replica_ran, summary.replica_ok, summary.replica_error, summary.replica_metadata)
    table.add_row("replica", replica)
    table.add_row("replica snapshot reflects", str(summary.watermark))
    table.add_row("hot index", _hot_line(summary.hot_ran, summary.hot_ok, summary.hot_error, summary.hot_metadata))
    table.add_row("hot index reflects", str(summary.hot_snapshot_id))
    Console().print(table)
    if summary.failed:
        sys.exit(1)


def _replica_line(ran: bool, ok: bool, error: str | None, metadata: Mapping[str, object]) -> str:
    if not ok:  # also when the replica could not even be read, before any run
        return f"FAILED: {error}"
    if not ran:
        return "up to date (nothing to copy)"
    return (
        f"{metadata.get('files_copied')} files, {metadata.get('bytes_moved')} bytes copied and verified "
        f"({metadata.get('files_reused')} already there) at {metadata.get('throughput_mb_s')} MB/s; "
        f"lag before {metadata.get('lag_snapshots_before')} snapshots; "
        f"egress ${metadata.get('egress_usd')}"
    )


def _hot_line(ran: bool, ok: bool, error: str | None, metadata: Mapping[str, object]) -> str:
    if not ok:
        return f"FAILED: {error}"
    if not ran:
        return "up to date"
    return (
        f"{metadata.get('vectors')} vectors in {metadata.get('segments')} segments "
        f"(+{metadata.get('rows_added')} from {metadata.get('files_read')} new files, "
        f"-{metadata.get('rows_evicted')} evicted) in {metadata.get('duration_s')} s"
        + (
            f", the new rows searchable after {metadata.get('visible_after_s')} s"
            # Only when a rebuild or merge followed the batch's own version.
            if metadata.get("rows_added")
            and float(metadata.get("duration_s") or 0) - float(metadata.get("visible_after_s") or 0) > 1  # type: ignore[arg-type]
            else ""
        )
    )


@main.command()
@home_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Server processes, forked after the index is loaded and sharing it [default: one per core].",
)
def serve(home: str | None, host: str, port: int, workers: int | None) -> None:
    """Answer similarity queries over the hot index (POST /search), with /healthz and /metrics.

    Queries whose time range reaches before the hot window are answered exactly from the table
    (the cold tier). The index is kept up to date by `nextesy sync` (or the hot_index asset); the
    service picks up each new version within a second, without a restart.
    """
    from .lib.hot.service import serve as run_service

    settings = _settings(home)
    tunables = huge_page_malloc(os.environ)
    if tunables is not None:  # once: the new process finds the setting in its environment
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, "GLIBC_TUNABLES": tunables})
    run_service(settings, host, port, workers or os.cpu_count() or 1)


# glibc's malloc then asks for transparent huge pages on the memory it maps (glibc 2.35+, Linux's THP in its
# `madvise` or `always` mode), so an index graph FAISS reads is backed by 2 MiB pages as its pages are first
# written. Collapsing it into them afterwards (engine.prefer_huge_pages) cost 2.4-3.2 s of CPU for a 1M x
# 768 graph on top of its 0.9-1 s read; read this way, 0.35-0.37 s in all, and the walk as fast (1.11 ms
# against 1.29 ms on 4 KiB pages). A serving worker loads each new version of the main graph while it
# answers queries, so that is CPU the queries get back.
HUGE_PAGE_MALLOC = "glibc.malloc.hugetlb=1"


def huge_page_malloc(env: Mapping[str, str]) -> str | None:
    """GLIBC_TUNABLES with HUGE_PAGE_MALLOC added, or None when there is nothing to add: not Linux, or the
    variable already sets glibc.malloc.hugetlb (the user's choice, or this process after its re-exec)."""
    current = env.get("GLIBC_TUNABLES", "")
    if not sys.platform.startswith("linux") or "glibc.malloc.hugetlb=" in current:
        return None
    return ":".join(filter(None, [current, HUGE_PAGE_MALLOC]))


@main.command()
@home_option
def status(home: str | None) -> None:
    """Row counts, snapshots and replica watermark of the tables, and quarantine counts by reason."""
    from rich.console import Console
    from rich.table import Table

    from .lib import iceberg, replication

    settings = _settings(home)
    catalog = iceberg.source_catalog(settings)
    source = iceberg.embeddings_table(settings)
    quarantine = iceberg.ensure_quarantine_table(catalog, settings.warehouse_uri)
    replica = replication.ensure_replica_table(settings, source)
    table = Table(title="nextesy tables")
    for column in ("table", "rows", "snapshots", "current snapshot", "metadata"):
        table.add_column(column)
    for name, tbl in (
        ("nextesy.embeddings", source),
        ("nextesy.quarantine", quarantine),
        ("replica nextesy.embeddings", replica),
    ):
        snapshot = tbl.current_snapshot()
        rows = int(snapshot.summary["total-records"] or 0) if snapshot and snapshot.summary else 0
        table.add_row(
            name,
            str(rows),
            str(len(tbl.metadata.snapshots)),
            str(snapshot.snapshot_id if snapshot else None),
            tbl.metadata_location,
        )
    console = Console()
    console.print(table)
    console.print(f"replica reflects source snapshot {replication.watermark(replica)}")
    if quarantine.current_snapshot() is not None:
        reasons = (
            quarantine.scan(selected_fields=("reason",)).to_arrow().group_by("reason").aggregate([("reason", "count")])
        )
        for row in sorted(reasons.to_pylist(), key=lambda r: r["reason"]):
            console.print(f"quarantined {row['reason']}: {row['reason_count']}")


@main.command()
@home_option
@click.option(
    "--min-age-hours",
    type=click.FloatRange(min=0),
    default=None,
    help="Remove only orphans older than this [default: NEXTESY_SWEEP_MIN_AGE_H or 72].",
)
def sweep(home: str | None, min_age_hours: float | None) -> None:
    """Remove orphan files (left by failed or killed commits) from the tables and the replica."""
    from datetime import timedelta

    from .lib import sweeper

    settings = _settings(home)
    try:
        min_age = None if min_age_hours is None else timedelta(hours=min_age_hours)
        results = sweeper.sweep(settings, min_age)
    except NextesyError as exc:
        raise click.ClickException(str(exc)) from exc
    for result in results:
        click.echo(
            f"{result.table}: {result.listed} files, {result.referenced} referenced, "
            f"{len(result.removed)} orphans removed ({result.bytes_removed} bytes), "
            f"{len(result.too_young)} unreferenced but younger than the safety window"
        )


@main.command()
@home_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address for the web UI.")
@click.option("--port", default=3000, show_default=True, type=int, help="Port for the web UI.")
def ui(home: str | None, host: str, port: int) -> None:
    """Open the Dagster UI (`dagster dev`) on the same instance `nextesy sync` records its runs in."""
    from .sync import dagster_instance

    settings = _settings(home)
    os.environ[ENV_VARS["home"]] = settings.home
    dagster_instance(settings)  # creates DAGSTER_HOME and its dagster.yaml if needed
    click.echo(f"Dagster UI on http://{host}:{port} (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    # The dagster beside this interpreter: the virtualenv need not be activated.
    beside = Path(sys.executable).parent / "dagster"
    dagster = str(beside) if beside.exists() else shutil.which("dagster")
    if dagster is None:
        raise click.ClickException("the `dagster` command is not installed; reinstall nextesy (pip install -e .)")
    os.execv(dagster, [dagster, "dev", "-m", "nextesy_assets.definitions", "-h", host, "-p", str(port)])


if __name__ == "__main__":
    main()
