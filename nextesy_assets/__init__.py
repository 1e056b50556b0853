"""Nextesy: ML embeddings from AWS landing zones to Iceberg and a verified GCS replica, as Dagster assets."""

__version__ = "0.1.0"
