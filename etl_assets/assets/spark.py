"""Cleaned and joined tables, computed with PySpark from the raw snapshots of the same day."""

from dagster import AssetExecutionContext, AssetIn, asset

from etl_assets.io_managers.spark_csv_io_manager import KEPT_ROWS, SparkOutput
from etl_assets.partitions import daily_partitions

SPARK_INPUT = "spark_csv_io_manager"
COMMON = {
    "partitions_def": daily_partitions,
    "io_manager_key": SPARK_INPUT,
    "kinds": {"spark", "csv"},
}


def spark_inputs(*names: str) -> dict[str, AssetIn]:
    return {name: AssetIn(input_manager_key=SPARK_INPUT) for name in names}


def is_blank(column):
    from pyspark.sql import functions as F

    return column.isNull() | (F.trim(column) == "")


def drop_reason(*rules):
    """Return a column naming the first rule a row breaks, or null when it breaks none."""
    from pyspark.sql import functions as F

    reason = F.lit(None).cast("string")
    for name, broken in reversed(rules):
        reason = F.when(broken, F.lit(name)).otherwise(reason)
    return reason


def observe_drops(frame, observation_name: str, rule_names: list[str]):
    """Attach an Observation counting rows dropped per rule, and rows kept, during the write."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    observation = Observation(observation_name)
    counters = [F.count(F.when(F.col("_drop_reason") == name, 1)).alias(f"dropped_{name}") for name in rule_names]
    counters.append(F.count(F.when(F.col("_drop_reason").isNull(), 1)).alias(KEPT_ROWS))
    return frame.observe(observation, *counters), observation


def newest_per_id(frame):
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    newest_first = Window.partitionBy("id").orderBy(F.col("updated_at").desc_nulls_last(), F.col("created_at").desc_nulls_last())
    return frame.withColumn("_rank", F.row_number().over(newest_first)).filter("_rank = 1").drop("_rank")


def parse_timestamp(name: str):
    from pyspark.sql import functions as F

    # try_to_timestamp: Spark 4 runs in ANSI mode, where a plain cast of a bad value fails the job.
    return F.try_to_timestamp(F.col(name)).alias(name)


def duration_seconds(column):
    """Parse `MM:SS` or `H:MM:SS` into seconds; any other text gives null."""
    from pyspark.sql import functions as F

    text = F.trim(column)
    minutes_seconds = r"^(\d{1,3}):([0-5]\d)$"
    hours_minutes_seconds = r"^(\d{1,2}):([0-5]\d):([0-5]\d)$"

    def part(pattern: str, index: int):
        return F.regexp_extract(text, pattern, index).cast("int")

    return (
        F.when(text.rlike(minutes_seconds), part(minutes_seconds, 1) * 60 + part(minutes_seconds, 2))
        .when(
            text.rlike(hours_minutes_seconds),
            part(hours_minutes_seconds, 1) * 3600 + part(hours_minutes_seconds, 2) * 60 + part(hours_minutes_seconds, 3),
        )
        .otherwise(F.lit(None).cast("int"))
    )


@asset(ins=spark_inputs("raw_tracks"), group_name="cleaned", **COMMON)
def tracks(context: AssetExecutionContext, raw_tracks) -> SparkOutput:
    """One row per track id, its newest version: names trimmed, `duration` parsed to `duration_seconds`.

    Tracks with a null or blank name or artist are dropped, and so are tracks
    whose duration is neither MM:SS nor H:MM:SS. The metadata counts each rule's drops.
    """
    from pyspark.sql import functions as F

    strings = ["name", "artist", "songwriters", "genres", "album"]
    typed = raw_tracks.select(
        "id",
        *[F.trim(F.col(name)).alias(name) for name in strings],
        duration_seconds(F.col("duration")).alias("duration_seconds"),
        parse_timestamp("created_at"),
        parse_timestamp("updated_at"),
    )

    rules = [
        ("blank_name", is_blank(F.col("name"))),
        ("blank_artist", is_blank(F.col("artist"))),
        ("invalid_duration", F.col("duration_seconds").isNull()),
    ]
    flagged = typed.withColumn("_drop_reason", drop_reason(*rules))
    flagged, drops = observe_drops(flagged, "tracks_drops", [name for name, _ in rules])

    cleaned = newest_per_id(flagged.filter(F.col("_drop_reason").isNull()).drop("_drop_reason"))
    context.log.info("Cleaning tracks: blank names and artists, invalid durations and older versions are dropped")
    return SparkOutput(cleaned.select("id", "name", "artist", "songwriters", "duration_seconds", "genres", "album", "created_at", "updated_at"), [drops], deduplicated=True)


@asset(ins=spark_inputs("raw_users"), group_name="cleaned", **COMMON)
def users(context: AssetExecutionContext, raw_users) -> SparkOutput:
    """One row per user id, its newest version: strings trimmed, email lower-cased."""
    from pyspark.sql import functions as F

    strings = ["first_name", "last_name", "gender", "favorite_genres"]
    typed = raw_users.select(
        "id",
        *[F.trim(F.col(name)).alias(name) for name in strings],
        F.lower(F.trim(F.col("email"))).alias("email"),
        parse_timestamp("created_at"),
        parse_timestamp("updated_at"),
    )

    flagged = typed.withColumn("_drop_reason", drop_reason(("null_id", F.col("id").isNull())))
    flagged, drops = observe_drops(flagged, "users_drops", ["null_id"])

    cleaned = newest_per_id(flagged.filter(F.col("_drop_reason").isNull()).drop("_drop_reason"))
    context.log.info("Cleaning users: emails normalised, older versions dropped")
    return SparkOutput(cleaned.select("id", "first_name", "last_name", "email", "gender", "favorite_genres", "created_at", "updated_at"), [drops], deduplicated=True)


@asset(ins=spark_inputs("raw_listen_history"), group_name="cleaned", **COMMON)
def listen_events(context: AssetExecutionContext, raw_listen_history) -> SparkOutput:
    """One row per listened track: a listening-history record exploded on `items`.

    `position` is the track's index in its record's `items`; `user_id` and the
    timestamps are the record's. Records without a user id or items are dropped.
    """
    from pyspark.sql import functions as F

    from etl_assets.schemas import TRACK_IDS_TYPE

    parsed = raw_listen_history.withColumn("_track_ids", F.from_json(F.col("items"), TRACK_IDS_TYPE))
    rules = [
        ("null_user_id", F.col("user_id").isNull()),
        ("null_items", F.col("items").isNull()),
        ("invalid_items", F.col("_track_ids").isNull()),
        ("empty_items", F.size(F.col("_track_ids")) == 0),
    ]
    flagged = parsed.withColumn("_drop_reason", drop_reason(*rules))
    flagged, drops = observe_drops(flagged, "listen_history_drops", [name for name, _ in rules])

    events = flagged.filter(F.col("_drop_reason").isNull()).select(
        "user_id",
        F.posexplode("_track_ids").alias("position", "track_id"),
        parse_timestamp("created_at"),
        parse_timestamp("updated_at"),
    )
    context.log.info("Exploding listening-history records into one event per track")
    return SparkOutput(events.select("user_id", "track_id", "position", "created_at", "updated_at"), [drops])


# Depends on the orphans too, so that their blocking share check can stop the join.
@asset(ins=spark_inputs("listen_events", "users", "tracks"), deps=["listen_event_orphans"], group_name="joined", **COMMON)
def listening_activity(context: AssetExecutionContext, listen_events, users, tracks):
    """One row per listening event whose user and track exist, with the user's and the track's attributes.

    Columns of users and tracks carry a `user_` or `track_` prefix where they
    would clash; `duration_seconds` keeps its name. Events of unknown users or
    tracks are left out (the orphan check counts them).
    """
    from pyspark.sql import functions as F

    user_columns = ["first_name", "last_name", "email", "gender", "favorite_genres"]
    track_columns = ["name", "artist", "songwriters", "genres", "album"]
    user_side = users.select(F.col("id").alias("user_id"), *[F.col(name).alias(f"user_{name}") for name in user_columns])
    track_side = tracks.select(
        F.col("id").alias("track_id"),
        *[F.col(name).alias(f"track_{name}") for name in track_columns],
        "duration_seconds",
    )

    # Users and tracks are dimension tables, far smaller than the events: broadcast them.
    joined = listen_events.join(F.broadcast(user_side), "user_id").join(F.broadcast(track_side), "track_id")
    context.log.info("Joining listening events with users and tracks")
    return joined.select(
        "user_id",
        "track_id",
        "position",
        "created_at",
        "updated_at",
        *[f"user_{name}" for name in user_columns],
        "track_name",
        "track_artist",
        "track_songwriters",
        "duration_seconds",
        "track_genres",
        "track_album",
    )


def flag_orphans(listen_events, users, tracks):
    """Return the events with an `orphan_reason` column: null when both user and track exist."""
    from pyspark.sql import functions as F

    known_users = users.select(F.col("id").alias("user_id"), F.lit(True).alias("_user_known"))
    known_tracks = tracks.select(F.col("id").alias("track_id"), F.lit(True).alias("_track_known"))
    flagged = listen_events.join(F.broadcast(known_users), "user_id", "left").join(F.broadcast(known_tracks), "track_id", "left")
    user_missing = F.col("_user_known").isNull()
    track_missing = F.col("_track_known").isNull()
    reason = (
        F.when(user_missing & track_missing, "unknown_user_and_track")
        .when(user_missing, "unknown_user")
        .when(track_missing, "unknown_track")
    )
    return flagged.withColumn("orphan_reason", reason).drop("_user_known", "_track_known")


@asset(ins=spark_inputs("listen_events", "users", "tracks"), group_name="joined", **COMMON)
def listen_event_orphans(context: AssetExecutionContext, listen_events, users, tracks):
    """One row per listening event whose user or track is missing from the day's tables, kept for inspection.

    `orphan_reason` is unknown_user, unknown_track or unknown_user_and_track.
    These events are the ones `listening_activity` leaves out.
    """
    from pyspark.sql import functions as F

    from pyspark.sql import Observation

    orphans = flag_orphans(listen_events, users, tracks).filter(F.col("orphan_reason").isNotNull())
    by_reason = Observation("orphans_by_reason")
    reasons = ["unknown_user", "unknown_track", "unknown_user_and_track"]
    orphans = orphans.observe(by_reason, *[F.count(F.when(F.col("orphan_reason") == reason, 1)).alias(f"orphans_{reason}") for reason in reasons])
    context.log.info("Setting aside listening events of unknown users or tracks")
    return SparkOutput(orphans.select("user_id", "track_id", "position", "created_at", "updated_at", "orphan_reason"), [by_reason])


spark_assets = [tracks, users, listen_events, listen_event_orphans, listening_activity]
