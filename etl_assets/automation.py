"""When assets run: a daily job and schedule, and sensors that refresh Spark tables after ad-hoc raw runs."""

from datetime import datetime, timezone

from dagster import (
    AssetKey,
    AssetSelection,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorDefinition,
    SkipReason,
    asset_sensor,
    define_asset_job,
    schedule,
)

from etl_assets.contract import RAW_TABLES
from etl_assets.partitions import daily_partitions

SCHEDULE_NAME = "daily_snapshot_schedule"

daily_snapshot_job = define_asset_job(
    "daily_snapshot_job",
    selection=AssetSelection.all(),
    partitions_def=daily_partitions,
    description="Fetch the three raw snapshots of a day, then clean and join them with Spark.",
)

spark_refresh_job = define_asset_job(
    "spark_refresh_job",
    selection=AssetSelection.groups("cleaned", "joined"),
    partitions_def=daily_partitions,
    description="Recompute the Spark tables of a day from its raw snapshots.",
)


@schedule(job=daily_snapshot_job, cron_schedule="0 6 * * *", execution_timezone="UTC", name=SCHEDULE_NAME)
def daily_snapshot_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    """Land the day's snapshot at 06:00 UTC, for that UTC day."""
    scheduled = context.scheduled_execution_time or datetime.now(timezone.utc)
    partition = scheduled.astimezone(timezone.utc).strftime("%Y-%m-%d")
    return RunRequest(run_key=partition, partition_key=partition)


def build_raw_sensor(raw_asset: str) -> SensorDefinition:
    downstream = AssetSelection.assets(raw_asset).downstream(include_self=False)

    @asset_sensor(
        asset_key=AssetKey(raw_asset),
        job=spark_refresh_job,
        name=f"{raw_asset}_sensor",
        description=f"Refresh the Spark tables built on {raw_asset} when it is materialised outside the daily schedule.",
    )
    def refresh_after_raw(context: SensorEvaluationContext, asset_event):
        materialization = asset_event.asset_materialization
        partition = materialization.partition if materialization else None
        if partition is None:
            return SkipReason(f"{raw_asset} was materialised without a partition")

        # The schedule's run and runs that already included the Spark tables need no refresh.
        run = context.instance.get_run_by_id(asset_event.run_id)
        if run is not None and "dagster/schedule_name" in run.tags:
            return SkipReason(f"{raw_asset} {partition} came from the schedule, whose run refreshes the Spark tables")
        run_assets = set(run.asset_selection or ()) if run is not None else set()
        targets = [key for key in downstream.resolve(context.repository_def.asset_graph) if key not in run_assets]
        if not targets:
            return SkipReason(f"the run that materialised {raw_asset} {partition} also refreshed its Spark tables")

        return RunRequest(
            run_key=f"{raw_asset}:{partition}:{asset_event.run_id}",
            partition_key=partition,
            asset_selection=sorted(targets, key=lambda key: key.to_user_string()),
        )

    return refresh_after_raw


raw_sensors = [build_raw_sensor(name) for name in RAW_TABLES]
