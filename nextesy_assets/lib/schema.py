"""The tables' schemas, in Iceberg and in Arrow, kept side by side so they cannot drift apart."""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform
from pyiceberg.types import (
    BooleanType,
    DoubleType,
    FloatType,
    ListType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

EMBEDDINGS_SCHEMA = Schema(
    NestedField(1, "id", StringType(), required=True),
    NestedField(2, "model", StringType(), required=True),
    NestedField(3, "vector", ListType(9, FloatType(), element_required=True), required=True),
    NestedField(4, "ts", TimestamptzType(), required=True),
    NestedField(5, "source", StringType(), required=False),
    NestedField(6, "payload", StringType(), required=False),
    NestedField(7, "batch_id", StringType(), required=True),
    NestedField(8, "ingested_at", TimestamptzType(), required=True),
)

EMBEDDINGS_SPEC = PartitionSpec(PartitionField(source_id=4, field_id=1000, transform=DayTransform(), name="ts_day"))

QUARANTINE_SCHEMA = Schema(
    NestedField(1, "batch_id", StringType(), required=True),
    NestedField(2, "record_index", LongType(), required=True),
    NestedField(3, "reason", StringType(), required=True),
    NestedField(4, "detail", StringType(), required=False),
    NestedField(5, "raw", StringType(), required=False),
    NestedField(6, "quarantined_at", TimestamptzType(), required=True),
)

TS = pa.timestamp("us", tz="UTC")
VECTOR_TYPE = pa.list_(pa.field("element", pa.float32(), nullable=False))

EMBEDDINGS_ARROW = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("vector", VECTOR_TYPE, nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("source", pa.string()),
        pa.field("payload", pa.string()),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("ingested_at", TS, nullable=False),
    ]
)

QUARANTINE_ARROW = pa.schema(
    [
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("record_index", pa.int64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("raw", pa.string()),
        pa.field("quarantined_at", TS, nullable=False),
    ]
)


EXTRA_ARROW_TYPES = {"string": pa.string(), "long": pa.int64(), "double": pa.float64(), "boolean": pa.bool_()}
EXTRA_ICEBERG_TYPES = {"string": StringType(), "long": LongType(), "double": DoubleType(), "boolean": BooleanType()}


def embeddings_arrow(extra_columns: tuple[tuple[str, str], ...] = ()) -> pa.Schema:
    """The Arrow schema of the files written for the table: the core columns, then the promoted ones."""
    schema = EMBEDDINGS_ARROW
    for name, kind in extra_columns:
        schema = schema.append(pa.field(name, EXTRA_ARROW_TYPES[kind]))
    return schema
