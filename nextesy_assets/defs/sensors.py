"""landing_sensor turns new landing files into batch runs; replica_sensor follows every table commit."""

import json

import dagster as dg

from ..lib import landing
from ..lib import properties as props
from .jobs import ingest_job, replicate_job
from .partitions import batch_partitions
from .resources import NextesyResource

# Sensor ticks time out after 60 s by default: list for at most a third of that.
TICK_BUDGET_S = 20.0
PAGE_SIZE = 1000
MAX_PAGES_PER_TICK = 50


def parse_cursor(cursor: str | None) -> dict[str, object]:
    """The cursor is `{"after": <last key listed>, "sweeps": <completed passes>}`."""
    if not cursor:
        return {"after": "", "sweeps": 0}
    value = json.loads(cursor)
    return {"after": str(value.get("after", "")), "sweeps": int(value.get("sweeps", 0))}


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Lists the landing prefix page by page and requests one run per new file (batch).",
)
def landing_sensor(context: dg.SensorEvaluationContext, nextesy: NextesyResource) -> dg.SensorResult:
    cursor = parse_cursor(context.cursor)
    known = set(context.instance.get_dynamic_partitions(props.BATCH_PARTITIONS))
    scan = landing.scan(
        nextesy.settings(),
        known=known,
        start_after=str(cursor["after"]),
        page_size=PAGE_SIZE,
        max_pages=MAX_PAGES_PER_TICK,
        time_budget_s=TICK_BUDGET_S,
    )
    if scan.unsupported:
        context.log.warning(
            f"skipped {len(scan.unsupported)} unsupported landing file(s): {', '.join(scan.unsupported[:10])}"
        )
    # A finished pass starts over from the top next tick, so files that land with keys sorting before
    # the cursor are still found; already-known batches are filtered out, and run_key dedupes the rest.
    next_cursor = (
        {"after": "", "sweeps": int(cursor["sweeps"]) + 1}
        if scan.complete
        else {"after": scan.last_key, "sweeps": cursor["sweeps"]}
    )
    new_ids = [registration.batch_id for registration in scan.new]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=r.batch_id, partition_key=r.batch_id, tags={"nextesy/landing-key": r.key})
            for r in scan.new
        ],
        dynamic_partitions_requests=[batch_partitions.build_add_request(new_ids)] if new_ids else [],
        cursor=json.dumps(next_cursor),
        skip_reason=None
        if new_ids
        else f"no new landing files among {scan.listed} listed ({len(scan.unsupported)} unsupported skipped)",
    )


@dg.asset_sensor(
    asset_key=dg.AssetKey("iceberg_table"),
    job=replicate_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts a replica run after the source table is materialized.",
)
def replica_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry) -> dg.RunRequest:
    # The replica run always targets the table's newest snapshot, so one run covers every commit since
    # the last tick. Keyed by the event, a re-evaluated tick cannot start a second run for it.
    event_ms = int(asset_event.timestamp * 1000)
    return dg.RunRequest(run_key=f"iceberg_table-{asset_event.run_id or 'runless'}-{event_ms}")
