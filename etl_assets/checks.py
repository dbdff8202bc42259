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
    AssetCheckSpec,
    AssetIn,
    AssetKey,
    AssetRecordsFilter,
    MetadataValue,
    asset_check,
    multi_asset_check,
)

from etl_assets.assets.spark import SPARK_INPUT
from etl_assets.contract import RAW_TABLES
from etl_assets.io_managers.csv_dialect import read_rows
from etl_assets.io_managers.csv_io_manager import MANIFEST_NAME, PART_NAME
from etl_assets.partitions import daily_partitions
from etl_assets.resources.storage import SnapshotStorage

# Partitioned asset checks are a preview feature of Dagster 1.13; they are what lets
# each check run on the partition its asset just wrote.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=Warning)

# Events of unknown users or tracks above this share block the joined table.
MAX_ORPHAN_SHARE = 0.05
# Below this share of yesterday's ids found again today, the source most likely regenerated its data.
MIN_CARRIED_OVER_SHARE = 0.5
# Plausible track length: one second to three hours.
DURATION_RANGE_SECONDS = (1, 3 * 3600)


def spark_in(name: str) -> AssetIn:
    return AssetIn(key=name, input_manager_key=SPARK_INPUT)


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


def table_counts(frame, with_ids: bool, with_durations: bool):
    """Count, in one Spark job, everything the checks of a cleaned table look at."""
    from pyspark.sql import functions as F

    low, high = DURATION_RANGE_SECONDS
    counters = [
        F.count(F.lit(1)).alias("rows"),
        F.count(F.when(F.col("created_at").isNull() | F.col("updated_at").isNull(), 1)).alias("unparsed_timestamps"),
        F.count(F.when(F.col("updated_at") < F.col("created_at"), 1)).alias("updated_before_created"),
    ]
    if with_ids:
        counters += [F.count(F.when(F.col("id").isNull(), 1)).alias("null_ids"), F.count_distinct("id").alias("distinct_ids")]
    if with_durations:
        counters.append(F.count(F.when((F.col("duration_seconds") < low) | (F.col("duration_seconds") > high), 1)).alias("outside_range"))
    return frame.agg(*counters).first().asDict()


def ids_result(asset: str, counts: dict) -> AssetCheckResult:
    duplicates = counts["rows"] - counts["null_ids"] - counts["distinct_ids"]
    return AssetCheckResult(
        asset_key=asset,
        check_name="ids_unique_and_not_null",
        passed=counts["null_ids"] == 0 and duplicates == 0,
        metadata={"null_ids": counts["null_ids"], "duplicate_ids": duplicates, "rows": counts["rows"]},
    )


def timestamps_result(asset: str, counts: dict) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=asset,
        check_name="timestamps_parse_and_ordered",
        passed=counts["unparsed_timestamps"] == 0 and counts["updated_before_created"] == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={key: counts[key] for key in ("unparsed_timestamps", "updated_before_created")},
    )


def ids_spec(asset: str, what: str) -> AssetCheckSpec:
    return AssetCheckSpec("ids_unique_and_not_null", asset=asset, blocking=True, partitions_def=daily_partitions,
                          description=f"Every {what} id is present and appears once.")


def timestamps_spec(asset: str) -> AssetCheckSpec:
    return AssetCheckSpec("timestamps_parse_and_ordered", asset=asset, partitions_def=daily_partitions,
                          description="created_at and updated_at parse as timestamps and updated_at >= created_at.")


# Each cleaned table is scanned once for all of its checks.
@multi_asset_check(
    specs=[
        ids_spec("tracks", "track"),
        timestamps_spec("tracks"),
        AssetCheckSpec("durations_in_plausible_range", asset="tracks", partitions_def=daily_partitions,
                       description=f"Every duration_seconds lies between {DURATION_RANGE_SECONDS[0]} and {DURATION_RANGE_SECONDS[1]} seconds."),
    ],
    ins={"tracks": spark_in("tracks")},
)
def tracks_checks(tracks):
    counts = table_counts(tracks, with_ids=True, with_durations=True)
    yield ids_result("tracks", counts)
    yield timestamps_result("tracks", counts)
    yield AssetCheckResult(
        asset_key="tracks",
        check_name="durations_in_plausible_range",
        passed=counts["outside_range"] == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={"outside_range": counts["outside_range"]},
    )


@multi_asset_check(specs=[ids_spec("users", "user"), timestamps_spec("users")], ins={"users": spark_in("users")})
def users_checks(users):
    counts = table_counts(users, with_ids=True, with_durations=False)
    yield ids_result("users", counts)
    yield timestamps_result("users", counts)


@multi_asset_check(specs=[timestamps_spec("listen_events")], ins={"listen_events": spark_in("listen_events")})
def listen_events_checks(listen_events):
    yield timestamps_result("listen_events", table_counts(listen_events, with_ids=False, with_durations=False))


def written_metadata(context: AssetCheckExecutionContext, asset: str) -> dict:
    """Return the metadata of the latest materialisation of `asset` for the check's partition.

    The row counts in it were observed by Spark while writing, so reading them
    here costs no Spark job.
    """
    result = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[context.partition_key]), limit=1
    )
    if not result.records:
        raise LookupError(f"{asset} has no materialisation for {context.partition_key}; materialise it before this check")
    return {key: value.value for key, value in result.records[0].asset_materialization.metadata.items()}


@asset_check(
    asset="listen_event_orphans",
    name="orphan_share_below_threshold",
    blocking=True,
    partitions_def=daily_partitions,
    additional_deps=["listen_events"],
    description=f"At most {MAX_ORPHAN_SHARE:.0%} of listening events name an unknown user or track; "
    "the orphans themselves are in listen_event_orphans.",
)
def orphan_share_below_threshold(context: AssetCheckExecutionContext) -> AssetCheckResult:
    events = written_metadata(context, "listen_events")["row_count"]
    orphans = written_metadata(context, "listen_event_orphans")["row_count"]
    share = orphans / events if events else 0.0
    return AssetCheckResult(
        passed=share <= MAX_ORPHAN_SHARE,
        metadata={"events": events, "orphans": orphans, "orphan_share": MetadataValue.float(share)},
    )


@asset_check(
    asset="listening_activity",
    name="one_row_per_non_orphan_event",
    blocking=True,
    partitions_def=daily_partitions,
    additional_deps=["listen_events", "listen_event_orphans"],
    description="The joined table has exactly one row per listening event whose user and track exist.",
)
def one_row_per_non_orphan_event(context: AssetCheckExecutionContext) -> AssetCheckResult:
    rows = written_metadata(context, "listening_activity")["row_count"]
    events = written_metadata(context, "listen_events")["row_count"]
    orphans = written_metadata(context, "listen_event_orphans")["row_count"]
    return AssetCheckResult(
        passed=rows == events - orphans,
        metadata={"rows": rows, "events": events, "orphans": orphans, "expected_rows": events - orphans},
    )


asset_checks = [
    tracks_checks,
    users_checks,
    listen_events_checks,
    orphan_share_below_threshold,
    one_row_per_non_orphan_event,
    *[build_rows_match_total_check(asset) for asset in RAW_TABLES],
    *[build_continuity_check(asset) for asset in ("raw_tracks", "raw_users")],
]
