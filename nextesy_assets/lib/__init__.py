"""Plain logic with no Dagster decorators: settings, storage, parsing, Iceberg, replication."""
