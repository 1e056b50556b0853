"""A great-expectations suite per batch over its scalar columns, in an ephemeral context (nothing on disk)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from .thresholds import Thresholds


@dataclass
class ExpectationReport:
    success: bool
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if not r["success"]]


def _context():  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # GX imports the deprecated sre_constants
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx, gx.get_context(mode="ephemeral", project_config=config)


def validate_batch(scalars: pa.Table, thresholds: Thresholds, now: datetime | None = None) -> ExpectationReport:
    """id not null and unique within the batch, ts inside the allowed window, norm inside the band,
    row count within limits; each result with its unexpected count and percentage."""
    now = now or datetime.now(UTC)
    gx, context = _context()
    frame = scalars.to_pandas()
    source = context.data_sources.add_pandas("nextesy")
    batch_definition = source.add_dataframe_asset("batch").add_batch_definition_whole_dataframe("whole")
    suite = gx.ExpectationSuite(name="nextesy_batch")
    expectations = gx.expectations
    earliest = now - timedelta(days=thresholds.ts_past_days)
    latest = now + timedelta(days=thresholds.ts_future_days)
    for expectation in (
        expectations.ExpectColumnValuesToNotBeNull(column="id"),
        expectations.ExpectColumnValuesToBeUnique(column="id"),
        expectations.ExpectColumnValuesToBeBetween(column="ts", min_value=earliest, max_value=latest),
        expectations.ExpectColumnValuesToBeBetween(
            column="norm", min_value=thresholds.norm_min, max_value=thresholds.norm_max
        ),
        expectations.ExpectTableRowCountToBeBetween(min_value=1, max_value=thresholds.max_records),
    ):
        suite.add_expectation(expectation)
    validation = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(suite)
    report = ExpectationReport(success=bool(validation.success))
    for result in validation.results:
        config = result.expectation_config
        details = result.result or {}
        report.results.append(
            {
                "expectation": config.type,
                "column": config.kwargs.get("column"),
                "success": bool(result.success),
                "unexpected_count": details.get("unexpected_count"),
                "unexpected_percent": details.get("unexpected_percent"),
                "observed_value": details.get("observed_value"),
            }
        )
    return report
