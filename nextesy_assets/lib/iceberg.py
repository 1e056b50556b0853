"""Iceberg catalogs and tables: creation, idempotent batch commits, snapshot lookups."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from . import failpoints, storage
from . import properties as props
from .errors import SchemaConflictError
from .schema import EMBEDDINGS_SCHEMA, EMBEDDINGS_SPEC, EXTRA_ICEBERG_TYPES, QUARANTINE_SCHEMA
from .settings import Settings

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Snapshot

T = TypeVar("T")

TABLE_PROPERTIES = {
    "format-version": "2",
    "write.parquet.compression-codec": "zstd",
    "write.parquet.compression-level": "1",
    # pyiceberg would retry a conflicting commit by re-applying it on the new base, without asking whether
    # the batch landed meanwhile: a batch raced by its own retry would land twice. Conflicts surface
    # instead, and _commit_once refreshes, checks nextesy.batch-id, and only then tries again.
    "commit.retry.num-retries": "0",
}


def _with_table_properties(table: Table) -> Table:
    """Bring a table created by an older version up to the properties Nextesy relies on."""
    stale = {k: v for k, v in TABLE_PROPERTIES.items() if k != "format-version" and table.properties.get(k) != v}
    if stale:
        with table.transaction() as txn:
            txn.set_properties(**stale)
    return table


def _catalog(name: str, warehouse: str, settings: Settings) -> Catalog:
    """The catalog configured for `name` in pyiceberg's own configuration, else the embedded SQLite one."""
    from pyiceberg.catalog import load_catalog
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.utils.config import Config

    if (configured := Config().get_catalog_config(name)) is not None:
        # Read now, not at pyiceberg's import: load_catalog alone would use the configuration of that moment.
        return load_catalog(name, **configured)
    settings.catalog_dir.mkdir(parents=True, exist_ok=True)
    return SqlCatalog(
        name,
        uri=f"sqlite:///{settings.catalog_dir / name}.db",
        warehouse=warehouse,
        **{"py-io-impl": storage.FILE_IO_IMPL, **storage.fileio_properties(warehouse)},
    )


def source_catalog(settings: Settings) -> Catalog:
    return _catalog(props.SOURCE_CATALOG, settings.warehouse_uri, settings)


def replica_catalog(settings: Settings) -> Catalog:
    return _catalog(props.REPLICA_CATALOG, settings.replica_uri, settings)


def load_or_create(catalog: Catalog, identifier: tuple[str, str], **create: Any) -> Table:
    """The table, created on first use.

    Not pyiceberg's create_table_if_not_exists: that writes a new metadata file before it finds the table
    exists, leaving an orphan file in the store on every call.
    """
    from pyiceberg.exceptions import NoSuchTableError, TableAlreadyExistsError

    try:
        return catalog.load_table(identifier)
    except NoSuchTableError:
        pass
    try:
        return catalog.create_table(identifier, **create)
    except TableAlreadyExistsError:  # created meanwhile by another run
        return catalog.load_table(identifier)


def table_location(warehouse_uri: str, table: str) -> str:
    return storage.join(warehouse_uri, props.NAMESPACE, table)


def _identifier(table: str) -> tuple[str, str]:
    return (props.NAMESPACE, table)


def ensure_embeddings_table(
    catalog: Catalog, warehouse_uri: str, dims: int, extra_columns: tuple[tuple[str, str], ...] = ()
) -> Table:
    """The embeddings table, created on first use and evolved to hold the promoted `extra_columns`.

    A dimension other than the table's is refused, never evolved.
    """
    catalog.create_namespace_if_not_exists(props.NAMESPACE)
    table = load_or_create(
        catalog,
        _identifier(props.EMBEDDINGS_TABLE),
        schema=EMBEDDINGS_SCHEMA,
        location=table_location(warehouse_uri, props.EMBEDDINGS_TABLE),
        partition_spec=EMBEDDINGS_SPEC,
        properties={**TABLE_PROPERTIES, props.VECTOR_DIMS: str(dims)},
    )
    table_dims = table.properties.get(props.VECTOR_DIMS)
    if table_dims is not None and int(table_dims) != dims:
        raise SchemaConflictError(
            f"table {'.'.join(_identifier(props.EMBEDDINGS_TABLE))} holds {table_dims}-d vectors but "
            f"NEXTESY_DIMS={dims}; a dimension change is refused, not evolved"
        )
    return evolve(_with_table_properties(table), extra_columns)


def evolve(table: Table, extra_columns: tuple[tuple[str, str], ...]) -> Table:
    """Add the promoted columns the table lacks (optional, so older files read them as null).

    The files Nextesy registers carry no field ids, so the name mapping is rewritten with the schema:
    without it a new column in new files would read as null.
    """
    from pyiceberg.table import TableProperties

    existing = {f.name: f for f in table.schema().fields}
    for name, kind in extra_columns:
        if name in existing and existing[name].field_type != EXTRA_ICEBERG_TYPES[kind]:
            raise SchemaConflictError(
                f"NEXTESY_EXTRA_COLUMNS declares {name}:{kind} but table {table.name()} holds {name} as "
                f"{existing[name].field_type}; a column's type is not changed"
            )
    missing = [(name, kind) for name, kind in extra_columns if name not in existing]
    if not missing:
        return table
    with table.transaction() as txn:
        with txn.update_schema() as update:
            for name, kind in missing:
                update.add_column(name, EXTRA_ICEBERG_TYPES[kind], doc="promoted input field (NEXTESY_EXTRA_COLUMNS)")
        txn.set_properties(
            **{TableProperties.DEFAULT_NAME_MAPPING: txn.table_metadata.schema().name_mapping.model_dump_json()}
        )
    return table


def embeddings_table(settings: Settings) -> Table:
    """The source embeddings table as the settings describe it (catalog, location, dimension, columns)."""
    return ensure_embeddings_table(
        source_catalog(settings), settings.warehouse_uri, settings.dims, settings.extra_columns
    )


def ensure_quarantine_table(catalog: Catalog, warehouse_uri: str) -> Table:
    catalog.create_namespace_if_not_exists(props.NAMESPACE)
    table = load_or_create(
        catalog,
        _identifier(props.QUARANTINE_TABLE),
        schema=QUARANTINE_SCHEMA,
        location=table_location(warehouse_uri, props.QUARANTINE_TABLE),
        properties=TABLE_PROPERTIES,
    )
    return _with_table_properties(table)


def find_batch_snapshot(table: Table, batch_id: str) -> Snapshot | None:
    """The snapshot that committed `batch_id`, if any: the idempotency key lives in the table itself."""
    for snapshot in table.metadata.snapshots:
        if snapshot.summary is not None and snapshot.summary[props.BATCH_ID] == batch_id:
            return snapshot
    return None


def committed_batches(table: Table) -> list[str]:
    """Batch ids in commit order, read from the snapshot summaries."""
    ordered = sorted(table.metadata.snapshots, key=lambda s: s.sequence_number or 0)
    return [s.summary[props.BATCH_ID] for s in ordered if s.summary is not None and s.summary[props.BATCH_ID]]


def _commit_once(table: Table, batch_id: str, commit: Callable[[], None]) -> tuple[int, bool]:
    """Run `commit` unless the batch is already in the table; retry after a refresh on conflict.

    Returns the batch's snapshot id and whether this call committed it.
    """
    from pyiceberg.exceptions import CommitFailedException

    for attempt in Retrying(
        retry=retry_if_exception_type(CommitFailedException),
        wait=wait_random_exponential(multiplier=0.05, max=2),
        stop=stop_after_attempt(12),
        reraise=True,
    ):
        with attempt:
            table.refresh()
            if (existing := find_batch_snapshot(table, batch_id)) is not None:
                return existing.snapshot_id, False
            failpoints.hit("iceberg.before_commit")
            commit()
            failpoints.hit("iceberg.after_commit")
    table.refresh()
    snapshot = find_batch_snapshot(table, batch_id)
    assert snapshot is not None, f"{batch_id=} committed but its snapshot is not in {table.name()}"
    return snapshot.snapshot_id, True


def commit_data_files(table: Table, batch_id: str, file_uris: list[str], rows: int, rows_in: int) -> tuple[int, bool]:
    """Register already-written Parquet files in one snapshot (no rewrite), exactly once per batch."""
    summary = {props.BATCH_ID: batch_id, props.BATCH_ROWS: str(rows), props.BATCH_ROWS_IN: str(rows_in)}
    return _commit_once(
        table,
        batch_id,
        lambda: table.add_files(file_uris, snapshot_properties=summary, check_duplicate_files=False),
    )


def append_rows(table: Table, batch_id: str, rows: pa.Table, rows_in: int) -> tuple[int, bool]:
    """Append `rows` in one snapshot, exactly once per batch."""
    summary = {props.BATCH_ID: batch_id, props.BATCH_ROWS: str(rows.num_rows), props.BATCH_ROWS_IN: str(rows_in)}
    return _commit_once(table, batch_id, lambda: table.append(rows, snapshot_properties=summary))


@dataclass
class Reconciliation:
    """Rows in against rows committed and quarantined, for every batch in the tables, from snapshot summaries."""

    batches: int = 0
    rows_in: int = 0
    rows_committed: int = 0
    rows_quarantined: int = 0
    table_rows: int = 0
    quarantine_rows: int = 0
    unbalanced: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            not self.unbalanced
            and self.rows_in == self.rows_committed + self.rows_quarantined
            and (self.table_rows, self.quarantine_rows) == (self.rows_committed, self.rows_quarantined)
        )


def reconcile(embeddings: Table, quarantine: Table) -> Reconciliation:
    """Per batch and in total: rows in = rows committed + rows quarantined; totals match the tables."""
    per_batch: dict[str, list[int]] = {}  # batch -> [rows_in, committed, quarantined]
    for column, table in ((1, embeddings), (2, quarantine)):
        for snapshot in table.metadata.snapshots:
            summary = snapshot.summary
            if summary is None or not summary[props.BATCH_ID]:
                continue
            entry = per_batch.setdefault(summary[props.BATCH_ID], [0, 0, 0])
            entry[0] = int(summary[props.BATCH_ROWS_IN] or 0)
            entry[column] += int(summary["added-records"] or 0)
    result = Reconciliation(batches=len(per_batch))
    for batch_id, (rows_in, committed, quarantined) in per_batch.items():
        result.rows_in += rows_in
        result.rows_committed += committed
        result.rows_quarantined += quarantined
        if rows_in != committed + quarantined:
            result.unbalanced[batch_id] = (rows_in, committed, quarantined)
    for attr, table in (("table_rows", embeddings), ("quarantine_rows", quarantine)):
        current = table.current_snapshot()
        setattr(result, attr, int(current.summary["total-records"] or 0) if current and current.summary else 0)
    return result
