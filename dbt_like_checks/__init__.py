"""Declarative, dbt-style data tests (YAML specs per table) that become Dagster asset checks."""
