"""Explicit schemas of every table the pipeline reads or writes, raw and cleaned.

Raw tables keep the API's field names, order and JSON types; `items` is kept as
its JSON text so that a list and a null survive the trip through CSV.
"""

from pyspark.sql.types import (
    ArrayType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from etl_assets.contract import RAW_TABLES, RawTable

RAW_SPARK_TYPES = {int: LongType(), str: StringType(), list: StringType()}


def raw_spark_schema(table: RawTable) -> StructType:
    return StructType([StructField(name, RAW_SPARK_TYPES[kind], nullable=True) for name, kind in table.fields.items()])


TRACKS_SCHEMA = StructType(
    [
        StructField("id", LongType(), False),
        StructField("name", StringType()),
        StructField("artist", StringType()),
        StructField("songwriters", StringType()),
        StructField("duration_seconds", IntegerType()),
        StructField("genres", StringType()),
        StructField("album", StringType()),
        StructField("created_at", TimestampType()),
        StructField("updated_at", TimestampType()),
    ]
)

USERS_SCHEMA = StructType(
    [
        StructField("id", LongType(), False),
        StructField("first_name", StringType()),
        StructField("last_name", StringType()),
        StructField("email", StringType()),
        StructField("gender", StringType()),
        StructField("favorite_genres", StringType()),
        StructField("created_at", TimestampType()),
        StructField("updated_at", TimestampType()),
    ]
)

LISTEN_EVENTS_SCHEMA = StructType(
    [
        StructField("user_id", LongType(), False),
        StructField("track_id", LongType(), False),
        StructField("position", IntegerType(), False),
        StructField("created_at", TimestampType()),
        StructField("updated_at", TimestampType()),
    ]
)

LISTENING_ACTIVITY_SCHEMA = StructType(
    [
        StructField("user_id", LongType(), False),
        StructField("track_id", LongType(), False),
        StructField("position", IntegerType(), False),
        StructField("created_at", TimestampType()),
        StructField("updated_at", TimestampType()),
        StructField("user_first_name", StringType()),
        StructField("user_last_name", StringType()),
        StructField("user_email", StringType()),
        StructField("user_gender", StringType()),
        StructField("user_favorite_genres", StringType()),
        StructField("track_name", StringType()),
        StructField("track_artist", StringType()),
        StructField("track_songwriters", StringType()),
        StructField("duration_seconds", IntegerType()),
        StructField("track_genres", StringType()),
        StructField("track_album", StringType()),
    ]
)

# The JSON array type `items` is parsed into, once in Spark.
TRACK_IDS_TYPE = ArrayType(LongType())

SPARK_SCHEMAS: dict[str, StructType] = {
    **{name: raw_spark_schema(table) for name, table in RAW_TABLES.items()},
    "tracks": TRACKS_SCHEMA,
    "users": USERS_SCHEMA,
    "listen_events": LISTEN_EVENTS_SCHEMA,
    "listen_event_orphans": StructType([*LISTEN_EVENTS_SCHEMA.fields, StructField("orphan_reason", StringType(), False)]),
    "listening_activity": LISTENING_ACTIVITY_SCHEMA,
}
