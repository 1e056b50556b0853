"""Dagster wiring: assets, checks, sensors, jobs and resources. The logic they call lives in `lib/`."""
