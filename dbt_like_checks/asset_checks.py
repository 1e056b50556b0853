"""Turn the YAML specs into Dagster asset checks, evaluated with DuckDB on the tables' current snapshots."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from nextesy_assets.defs.resources import NextesyResource

from .evaluate import evaluate
from .spec import TABLES, TableSpec, load_specs

if TYPE_CHECKING:
    import duckdb

    from nextesy_assets.lib.settings import Settings

SPEC_DIR = Path(__file__).parent / "specs"


@contextmanager
def open_tables(settings: "Settings") -> Iterator[tuple["duckdb.DuckDBPyConnection", dict[str, str]]]:
    """A DuckDB connection with one view per Nextesy table, and the embeddings table's properties.

    Local tables are read lazily by DuckDB's own Iceberg reader (column pruning, nothing copied);
    tables on object storage are scanned through pyiceberg.
    """

    from nextesy_assets.lib import duckdb_iceberg, iceberg

    catalog = iceberg.source_catalog(settings)
    tables = {
        "embeddings": iceberg.embeddings_table(settings),
        "quarantine": iceberg.ensure_quarantine_table(catalog, settings.warehouse_uri),
    }
    con = duckdb_iceberg.connect()
    try:
        for name in TABLES:
            duckdb_iceberg.register(con, name, tables[name])
        yield con, dict(tables["embeddings"].properties)
    finally:
        con.close()


def _checks_for(asset: str, specs: list[TableSpec]) -> dg.AssetChecksDefinition:

    pairs = [(spec, test) for spec in specs for test in spec.tests]
    check_specs = [
        dg.AssetCheckSpec(
            test.name,
            asset=asset,
            blocking=test.blocking,
            description=test.description or f"{test.kind} on nextesy.{spec.table} ({spec.path.name})",
        )
        for spec, test in pairs
    ]

    @dg.multi_asset_check(specs=check_specs, name=f"{asset}_declarative_tests")
    def declarative_tests(nextesy: NextesyResource) -> Iterator[dg.AssetCheckResult]:
        with open_tables(nextesy.settings()) as (con, properties):
            for spec, test in pairs:
                result = evaluate(con, spec.table, test, properties)
                yield dg.AssetCheckResult(
                    asset_key=asset,
                    check_name=test.name,
                    passed=result.passed,
                    severity=dg.AssetCheckSeverity.ERROR if result.severity == "error" else dg.AssetCheckSeverity.WARN,
                    description=result.description,
                    metadata=result.metadata,
                )

    return declarative_tests


def build_asset_checks(spec_dir: Path = SPEC_DIR) -> list[dg.AssetChecksDefinition]:
    """One multi-asset check per asset named in the specs; an invalid spec raises SpecError here."""
    by_asset: dict[str, list[TableSpec]] = {}
    for spec in load_specs(spec_dir):
        by_asset.setdefault(spec.asset, []).append(spec)
    return [_checks_for(asset, specs) for asset, specs in sorted(by_asset.items())]
