"""The orphan sweeper: after a commit killed with its files written, exactly those files go, nothing live."""

from __future__ import annotations

import signal
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from nextesy_assets.definitions import defs
from nextesy_assets.defs.maintenance import SWEEP_JOB
from nextesy_assets.lib import errors, storage, sweeper
from nextesy_assets.lib.settings import Settings

from .test_crashes import GOOD_ROWS, assert_exact, land, run_sync


def unreferenced(results: list[sweeper.Sweep]) -> set[str]:
    return {uri for r in results for uri in (*r.removed, *r.too_young)}


@pytest.mark.timeout(240)
def test_orphans_of_a_killed_commit_are_swept_once_old_enough(
    home: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    land(settings, batches=1)
    # Killed inside the commit: manifests, manifest list and the new metadata file written, catalog not moved.
    killed = run_sync({"NEXTESY_FAILPOINTS": "iceberg.commit_metadata_written"})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert run_sync().returncode == 0  # the rerun commits the batch afresh
    assert_exact(settings, good_rows=GOOD_ROWS // 3)

    # Within the safety window (72 h by default) nothing is removed, but the orphans are seen.
    young = sweeper.sweep(settings)
    orphans = unreferenced(young)
    assert not any(r.removed for r in young)
    kinds = {uri.rsplit("/", 1)[-1].split("-")[0] for uri in orphans}
    assert any(uri.endswith(".metadata.json") for uri in orphans) and "snap" in kinds, orphans
    assert all("/metadata/" in uri for uri in orphans)  # data files of the batch are referenced by the rerun

    # The daily Dagster job, with the window at zero, removes exactly those.
    monkeypatch.setenv(sweeper.MIN_AGE_VAR, "0")
    run = defs.resolve_job_def(SWEEP_JOB).execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert run.success
    assert not any(storage.exists(uri) for uri in orphans)
    [output] = [e for e in run.all_events if e.is_successful_output]
    metadata = {k: v.value for k, v in output.step_output_data.metadata.items()}
    assert sum(v for k, v in metadata.items() if k.endswith(" removed")) == len(orphans)
    assert_exact(settings, good_rows=GOOD_ROWS // 3)  # every table and the replica still read, exact
    # Nothing live was ever counted an orphan: what is left is all referenced.
    assert all(r.referenced == r.listed > 0 for r in sweeper.sweep(settings, min_age=timedelta(0)))


def test_a_bad_safety_window_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sweeper.MIN_AGE_VAR, "three days")
    with pytest.raises(
        errors.ConfigurationError, match="NEXTESY_SWEEP_MIN_AGE_H must be a number of hours, got 'three"
    ):
        sweeper.min_age_from_env()
