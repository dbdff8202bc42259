"""Asset checks: one property each, counted on the partition just written.

Blocking checks stop downstream assets of the run where the data would be
wrong (duplicate keys, rows missing against the API's total, too many orphans).
"""

import json
import warnings

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetIn,
    MetadataValue,
    asset_check,
)

from etl_assets.contract import RAW_TABLES
from etl_assets.io_managers.csv_dialect import read_rows
from etl_assets.io_managers.csv_io_manager import MANIFEST_NAME, PART_NAME
from etl_assets.partitions import daily_partitions
from etl_assets.resources.storage import SnapshotStorage

# Partitioned asset checks are a preview feature of Dagster 1.13; they are what lets
# each check run on the partition its asset just wrote.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=Warning)

SPARK_INPUT = "spark_csv_io_manager"
# Events of unknown users or tracks above this share block the joined table.
MAX_ORPHAN_SHARE = 0.05
# Below this share of yesterday's ids found again today, the source most likely regenerated its data.
MIN_CARRIED_OVER_SHARE = 0.5
# Plausible track length: one second to three hours.
DURATION_RANGE_SECONDS = (1, 3 * 3600)


def spark_in(name: str) -> AssetIn:
    return AssetIn(key=name, input_manager_key=SPARK_INPUT)


def id_check_result(frame) -> AssetCheckResult:
    from pyspark.sql import functions as F

    counts = frame.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count(F.when(F.col("id").isNull(), 1)).alias("null_ids"),
        F.count_distinct("id").alias("distinct_ids"),
    ).first()
    duplicates = counts["rows"] - counts["null_ids"] - counts["distinct_ids"]
    return AssetCheckResult(
        passed=counts["null_ids"] == 0 and duplicates == 0,
        metadata={"null_ids": counts["null_ids"], "duplicate_ids": duplicates, "rows": counts["rows"]},
    )


# A check receives the asset it checks through a parameter named after that asset.
@asset_check(asset="tracks", name="ids_unique_and_not_null", blocking=True, partitions_def=daily_partitions,
             description="Every track id is present and appears once.")
def tracks_ids_unique_and_not_null(tracks) -> AssetCheckResult:
    return id_check_result(tracks)


@asset_check(asset="users", name="ids_unique_and_not_null", blocking=True, partitions_def=daily_partitions,
             description="Every user id is present and appears once.")
def users_ids_unique_and_not_null(users) -> AssetCheckResult:
    return id_check_result(users)


def read_manifest(storage: SnapshotStorage, asset: str, partition: str) -> dict:
    return json.loads((storage.partition_path(asset, partition) / MANIFEST_NAME).read_text())


def build_rows_match_total_check(asset: str):
    @asset_check(
        asset=asset,
        name="rows_match_api_total",
        blocking=True,
        partitions_def=daily_partitions,
        description="Rows landed plus rows rejected equal the API's total, less duplicates dropped.",
    )
    def rows_match_api_total(context: AssetCheckExecutionContext, storage: SnapshotStorage) -> AssetCheckResult:
        manifest = read_manifest(storage, asset, context.partition_key)
        expected = manifest["api_total"] - manifest["duplicates_dropped"]
        accounted = manifest["rows"] + manifest["rejected_rows"]
        return AssetCheckResult(
            passed=accounted == expected,
            metadata={
                "api_total": manifest["api_total"],
                "rows": manifest["rows"],
                "rejected_rows": manifest["rejected_rows"],
                "duplicates_dropped": manifest["duplicates_dropped"],
                "missing_rows": expected - accounted,
            },
        )

    return rows_match_api_total


def previous_partition(partition: str) -> str:
    from datetime import date, timedelta

    return (date.fromisoformat(partition) - timedelta(days=1)).isoformat()


def read_ids(storage: SnapshotStorage, asset: str, partition: str) -> set[int] | None:
    part = storage.partition_path(asset, partition) / PART_NAME
    if not part.exists():
        return None
    with part.open("rb") as source:
        return {row["id"] for row in read_rows(source, RAW_TABLES[asset].fields)}


def build_continuity_check(asset: str):
    @asset_check(
        asset=asset,
        name="ids_carried_over_from_previous_day",
        partitions_def=daily_partitions,
        description="Share of the previous day's ids found again. A collapse means the source regenerated "
        "its data with new ids, which makes day-over-day comparisons meaningless.",
    )
    def ids_carried_over(context: AssetCheckExecutionContext, storage: SnapshotStorage) -> AssetCheckResult:
        previous = previous_partition(context.partition_key)
        previous_ids = read_ids(storage, asset, previous)
        if not previous_ids:
            return AssetCheckResult(passed=True, metadata={"previous_partition": previous, "previous_ids": 0})

        current_ids = read_ids(storage, asset, context.partition_key) or set()
        share = len(previous_ids & current_ids) / len(previous_ids)
        return AssetCheckResult(
            passed=share >= MIN_CARRIED_OVER_SHARE,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "previous_partition": previous,
                "previous_ids": len(previous_ids),
                "carried_over_share": MetadataValue.float(share),
            },
            description=None if share >= MIN_CARRIED_OVER_SHARE else f"only {share:.1%} of {previous}'s ids are still served",
        )

    return ids_carried_over


@asset_check(
    asset="listen_event_orphans",
    name="orphan_share_below_threshold",
    blocking=True,
    partitions_def=daily_partitions,
    additional_ins={"listen_events": spark_in("listen_events")},
    description=f"At most {MAX_ORPHAN_SHARE:.0%} of listening events name an unknown user or track; "
    "the orphans themselves are in listen_event_orphans.",
)
def orphan_share_below_threshold(listen_event_orphans, listen_events) -> AssetCheckResult:
    total = listen_events.count()
    by_reason = {row["orphan_reason"]: row["count"] for row in listen_event_orphans.groupBy("orphan_reason").count().collect()}
    orphan_count = sum(by_reason.values())
    share = orphan_count / total if total else 0.0
    return AssetCheckResult(
        passed=share <= MAX_ORPHAN_SHARE,
        metadata={"events": total, "orphans": orphan_count, "orphan_share": MetadataValue.float(share), **{f"orphans_{reason}": count for reason, count in by_reason.items()}},
    )


@asset_check(
    asset="tracks",
    name="durations_in_plausible_range",
    partitions_def=daily_partitions,
    description=f"Every duration_seconds lies between {DURATION_RANGE_SECONDS[0]} and {DURATION_RANGE_SECONDS[1]} seconds.",
)
def durations_in_plausible_range(tracks) -> AssetCheckResult:
    from pyspark.sql import functions as F

    low, high = DURATION_RANGE_SECONDS
    outside = tracks.filter((F.col("duration_seconds") < low) | (F.col("duration_seconds") > high)).count()
    return AssetCheckResult(passed=outside == 0, severity=AssetCheckSeverity.WARN, metadata={"outside_range": outside})


def timestamps_result(frame) -> AssetCheckResult:
    from pyspark.sql import functions as F

    counts = frame.agg(
        F.count(F.when(F.col("created_at").isNull() | F.col("updated_at").isNull(), 1)).alias("unparsed"),
        F.count(F.when(F.col("updated_at") < F.col("created_at"), 1)).alias("updated_before_created"),
    ).first()
    return AssetCheckResult(
        passed=counts["unparsed"] == 0 and counts["updated_before_created"] == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={"unparsed_timestamps": counts["unparsed"], "updated_before_created": counts["updated_before_created"]},
    )


TIMESTAMPS_CHECK = {
    "name": "timestamps_parse_and_ordered",
    "partitions_def": daily_partitions,
    "description": "created_at and updated_at parse as timestamps and updated_at >= created_at.",
}


@asset_check(asset="tracks", **TIMESTAMPS_CHECK)
def tracks_timestamps_parse_and_ordered(tracks) -> AssetCheckResult:
    return timestamps_result(tracks)


@asset_check(asset="users", **TIMESTAMPS_CHECK)
def users_timestamps_parse_and_ordered(users) -> AssetCheckResult:
    return timestamps_result(users)


@asset_check(asset="listen_events", **TIMESTAMPS_CHECK)
def listen_events_timestamps_parse_and_ordered(listen_events) -> AssetCheckResult:
    return timestamps_result(listen_events)


@asset_check(
    asset="listening_activity",
    name="one_row_per_non_orphan_event",
    blocking=True,
    partitions_def=daily_partitions,
    additional_ins={"events": spark_in("listen_events"), "orphans": spark_in("listen_event_orphans")},
    description="The joined table has exactly one row per listening event whose user and track exist.",
)
def one_row_per_non_orphan_event(listening_activity, events, orphans) -> AssetCheckResult:
    rows, event_count, orphan_count = listening_activity.count(), events.count(), orphans.count()
    expected = event_count - orphan_count
    return AssetCheckResult(
        passed=rows == expected,
        metadata={"rows": rows, "events": event_count, "orphans": orphan_count, "expected_rows": expected},
    )


asset_checks = [
    tracks_ids_unique_and_not_null,
    users_ids_unique_and_not_null,
    orphan_share_below_threshold,
    durations_in_plausible_range,
    one_row_per_non_orphan_event,
    *[build_rows_match_total_check(asset) for asset in RAW_TABLES],
    *[build_continuity_check(asset) for asset in ("raw_tracks", "raw_users")],
    tracks_timestamps_parse_and_ordered,
    users_timestamps_parse_and_ordered,
    listen_events_timestamps_parse_and_ordered,
]
