"""Run-time settings: where data lives and what it must look like, read from the environment on demand."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import ConfigurationError

DEFAULT_DIMS = 768
DEFAULT_MODEL = "default"
DEFAULT_RAW_LIMIT = 256 * 1024
DEFAULT_ROW_GROUP_BYTES = 128 * 1024 * 1024
DEFAULT_EGRESS_USD_PER_GB = 0.09
DEFAULT_HOT_WINDOW_DAYS = 7
# The graph walk's breadth (FAISS efSearch) for hot queries: recall@10 0.963 at 1M x 768 (bench/hot).
DEFAULT_HOT_EF_SEARCH = 88
# Rows in a model's delta graph at which an update links them into the main graph in place (update.py): 1,
# after every batch, since even a small delta costs queries a second walk (5k rows beside 1.09M: 12-30% more
# server CPU per HTTP request, bench/hot).
DEFAULT_HOT_FOLD_DELTA_ROWS = 1
# Who walks a hot query's graph: the native walk (rust_ext/src/hnsw.rs), or FAISS's own search of it.
HOT_WALKS = ("native", "faiss")

# Every setting, its variable and what it means; the README's table is written from this.
ENV_VARS: dict[str, str] = {
    "home": "NEXTESY_HOME",
    "landing_uri": "NEXTESY_LANDING_URI",
    "warehouse_uri": "NEXTESY_WAREHOUSE_URI",
    "replica_uri": "NEXTESY_REPLICA_URI",
    "dims": "NEXTESY_DIMS",
    "default_model": "NEXTESY_DEFAULT_MODEL",
    "raw_limit": "NEXTESY_QUARANTINE_RAW_LIMIT",
    "row_group_bytes": "NEXTESY_ROW_GROUP_BYTES",
    "extra_columns": "NEXTESY_EXTRA_COLUMNS",
    "hot_window_days": "NEXTESY_HOT_WINDOW_DAYS",
    "hot_dir": "NEXTESY_HOT_DIR",
    "hot_ef_search": "NEXTESY_HOT_EF_SEARCH",
    "hot_fold_delta_rows": "NEXTESY_HOT_FOLD_DELTA_ROWS",
    "hot_walk": "NEXTESY_HOT_WALK",
}

# Types an input field may be promoted to, as `name:type` in NEXTESY_EXTRA_COLUMNS.
EXTRA_COLUMN_TYPES = ("string", "long", "double", "boolean")
CORE_COLUMNS = frozenset({"id", "model", "vector", "ts", "source", "payload", "batch_id", "ingested_at"})
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


def parse_extra_columns(value: str) -> tuple[tuple[str, str], ...]:
    """`"lang:string, doc_chars:long"` -> (("lang", "string"), ("doc_chars", "long")), validated."""
    columns: list[tuple[str, str]] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, kind = item.partition(":")
        name, kind = name.strip(), (kind.strip() or "string")
        if not _IDENTIFIER.match(name):
            raise ConfigurationError(f"NEXTESY_EXTRA_COLUMNS: {name!r} is not a lower-case identifier")
        if name in CORE_COLUMNS or name in dict(columns):
            raise ConfigurationError(f"NEXTESY_EXTRA_COLUMNS: {name!r} is already a column")
        if kind not in EXTRA_COLUMN_TYPES:
            raise ConfigurationError(
                f"NEXTESY_EXTRA_COLUMNS: type {kind!r} of {name!r} is not one of {', '.join(EXTRA_COLUMN_TYPES)}"
            )
        columns.append((name, kind))
    return tuple(columns)


def _local_or_uri(value: str) -> str:
    """URIs pass through; plain paths become absolute so every process agrees on them."""
    if "://" in value:
        return value.rstrip("/")
    return str(Path(value).expanduser().resolve())


@dataclass(frozen=True)
class Settings:
    """Where the landing zone, the warehouse, the replica and the catalogs live, and the input contract.

    Attributes:
        home: Root of the embedded default (`NEXTESY_HOME`, default `./.nextesy`).
        landing_uri: Where embedding files land (`s3://…` in production, `{home}/landing` by default).
        warehouse_uri: The source Iceberg warehouse (`s3://…`, `{home}/warehouse`).
        replica_uri: The replica warehouse (`gs://…`, `{home}/replica`).
        dims: Vector dimension every record must have.
        default_model: Model name given to records that carry none.
        raw_limit: Characters of a rejected record kept in the quarantine's `raw` column.
        row_group_bytes: Target size of a Parquet row group.
        extra_columns: Input fields promoted from `payload` to optional columns of their own, as
            (name, type) pairs; the table's schema evolves to hold them, and the replica follows.
        hot_window_days: Days of recent embeddings the hot index holds (today and the N-1 before, UTC).
        hot_dir: Local directory of the hot index (`{home}/hot`); the query service reads it.
        hot_ef_search: Breadth of a hot query's graph walk (FAISS efSearch): more answers more exactly and
            costs more, about in proportion; the `hot_recall` check judges the index at this breadth.
        hot_fold_delta_rows: Rows at which an update links a model's delta graph into its main graph in place,
            after publishing the batch: a query walks both graphs, and each fold writes the main graph again
            (about 1 GB at 1M x 768). 1 (the default) folds after every batch.
        hot_walk: What walks a hot query's graph: `native` (the default: the native engine reads FAISS's graph
            and codes in place) or `faiss` (FAISS's own search), the same graph and answers either way.
    """

    home: str
    landing_uri: str
    warehouse_uri: str
    replica_uri: str
    dims: int = DEFAULT_DIMS
    default_model: str = DEFAULT_MODEL
    raw_limit: int = DEFAULT_RAW_LIMIT
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES
    extra_columns: tuple[tuple[str, str], ...] = ()
    hot_window_days: int = DEFAULT_HOT_WINDOW_DAYS
    hot_dir: str = ""
    hot_ef_search: int = DEFAULT_HOT_EF_SEARCH
    hot_fold_delta_rows: int = DEFAULT_HOT_FOLD_DELTA_ROWS
    hot_walk: str = HOT_WALKS[0]

    @classmethod
    def load(
        cls, overrides: Mapping[str, object | None] | None = None, env: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings from explicit overrides, then the environment, then the defaults."""
        env = os.environ if env is None else env
        given = {k: v for k, v in (overrides or {}).items() if v is not None and v != ""}
        unknown = set(given) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigurationError(f"unknown settings: {sorted(unknown)}")

        def pick(name: str) -> object | None:
            if name in given:
                return given[name]
            return env.get(ENV_VARS[name]) or None

        home = _local_or_uri(str(pick("home") or ".nextesy"))
        if "://" in home:
            raise ConfigurationError(f"NEXTESY_HOME must be a local directory, got {home=}")
        values: dict[str, object] = {
            "home": home,
            "landing_uri": _local_or_uri(str(pick("landing_uri") or f"{home}/landing")),
            "warehouse_uri": _local_or_uri(str(pick("warehouse_uri") or f"{home}/warehouse")),
            "replica_uri": _local_or_uri(str(pick("replica_uri") or f"{home}/replica")),
            "default_model": str(pick("default_model") or DEFAULT_MODEL),
            "extra_columns": parse_extra_columns(str(pick("extra_columns") or "")),
            # The index is files an ANN library memory-maps or reads: it lives on the serving node's disk.
            "hot_dir": _local_or_uri(str(pick("hot_dir") or f"{home}/hot")),
        }
        walk = str(pick("hot_walk") or HOT_WALKS[0])
        if walk not in HOT_WALKS:
            raise ConfigurationError(f"NEXTESY_HOT_WALK must be one of {', '.join(HOT_WALKS)}, got {walk!r}")
        values["hot_walk"] = walk
        if "://" in str(values["hot_dir"]):
            raise ConfigurationError(f"NEXTESY_HOT_DIR must be a local directory, got {values['hot_dir']!r}")
        for name, default in (
            ("dims", DEFAULT_DIMS),
            ("raw_limit", DEFAULT_RAW_LIMIT),
            ("row_group_bytes", DEFAULT_ROW_GROUP_BYTES),
            ("hot_window_days", DEFAULT_HOT_WINDOW_DAYS),
            ("hot_ef_search", DEFAULT_HOT_EF_SEARCH),
            ("hot_fold_delta_rows", DEFAULT_HOT_FOLD_DELTA_ROWS),
        ):
            raw = pick(name)
            try:
                number = default if raw is None else int(str(raw))
            except ValueError:
                raise ConfigurationError(f"{ENV_VARS[name]} must be a whole number, got {raw!r}") from None
            if number <= 0:
                raise ConfigurationError(f"{ENV_VARS[name]} must be positive, got {number}")
            values[name] = number
        return cls(**values)  # type: ignore[arg-type]

    @property
    def catalog_dir(self) -> Path:
        return Path(self.home) / "catalog"

    @property
    def dagster_home(self) -> Path:
        return Path(self.home) / "dagster"

    @property
    def batches_uri(self) -> str:
        """Where per-batch bookkeeping (registration, manifest, rejects) lives, beside the warehouse."""
        return f"{self.warehouse_uri}/_nextesy/batches"
