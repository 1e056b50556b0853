"""Declarative, dbt-style data tests (YAML specs per table) that become Dagster asset checks."""

from .spec import SpecError, TableSpec, TestSpec, load_spec, load_specs

__all__ = ["SpecError", "TableSpec", "TestSpec", "load_spec", "load_specs"]
