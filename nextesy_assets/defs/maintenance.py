"""Housekeeping: the daily sweep of orphan files left by failed or killed commits."""

import dagster as dg

from ..lib import sweeper
from .resources import NextesyResource

SWEEP_JOB = "sweep_orphans"


@dg.op(description="Remove files no snapshot references, older than NEXTESY_SWEEP_MIN_AGE_H (72 h).")
def sweep_orphan_files(context: dg.OpExecutionContext, nextesy: NextesyResource) -> dg.Output[None]:
    results = sweeper.sweep(nextesy.settings())
    for result in results:
        context.log.info(
            f"{result.table}: {len(result.removed)} orphans removed ({result.bytes_removed} bytes), "
            f"{len(result.too_young)} within the safety window"
        )
    return dg.Output(
        None,
        metadata={f"{r.table} removed": len(r.removed) for r in results}
        | {
            "bytes_removed": sum(r.bytes_removed for r in results),
            "within_window": sum(len(r.too_young) for r in results),
        },
    )


@dg.job(name=SWEEP_JOB, description="Sweep orphan files from the source tables and the replica.")
def sweep_job() -> None:
    sweep_orphan_files()


sweep_schedule = dg.ScheduleDefinition(
    job=sweep_job, cron_schedule="30 3 * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)
