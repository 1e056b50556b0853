"""DuckDB as an independent Iceberg reader, with its extensions loaded from the PyPI packages (no download)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb
    from pyiceberg.table import Table


def extension_path(package_name: str) -> str:
    """The extension file a `duckdb-extension-*` package ships for the installed DuckDB version."""
    import importlib

    import duckdb

    package = importlib.import_module(package_name)
    found = sorted(Path(package.__file__).parent.glob(f"extensions/v{duckdb.__version__}/*.duckdb_extension"))
    if not found:
        raise FileNotFoundError(f"{package_name} ships no extension for duckdb {duckdb.__version__}")
    return str(found[0])


def connect() -> duckdb.DuckDBPyConnection:
    import duckdb

    con = duckdb.connect(config={"allow_unsigned_extensions": "true", "autoinstall_known_extensions": "false"})
    for package in ("duckdb_extension_avro", "duckdb_extension_iceberg"):
        con.execute(f"LOAD '{extension_path(package)}'")
    return con


def register(con: duckdb.DuckDBPyConnection, name: str, table: Table) -> None:
    """A view `name` over the table's current snapshot."""
    location = table.metadata_location
    quoted = '"' + name.replace('"', '""') + '"'
    if table.current_snapshot() is None:
        con.register(name, table.schema().as_arrow().empty_table())
    elif "://" not in location or location.startswith("file://"):
        literal = "'" + location.replace("'", "''") + "'"  # DDL takes no parameters
        con.execute(f"CREATE VIEW {quoted} AS SELECT * FROM iceberg_scan({literal})")
    else:
        con.register(name, table.scan().to_arrow())
