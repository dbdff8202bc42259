"""Transforms: the product's Spark assets against the same rules written in DuckDB SQL."""

import hashlib
import shutil
import time
from pathlib import Path

SPARK_ASSETS = ["tracks", "users", "listen_events", "listening_activity"]
TIMESTAMP_TEXT = "%Y-%m-%dT%H:%M:%S.%f"
ACTIVITY_COLUMNS = [
    "user_id", "track_id", "position", "created_at", "updated_at",
    "user_first_name", "user_last_name", "user_email", "user_gender", "user_favorite_genres",
    "track_name", "track_artist", "track_songwriters", "duration_seconds", "track_genres", "track_album",
]
# The project's CSV dialect: strings quoted with doubled quotes, null as a bare \N.
CSV_OPTIONS = "header = true, quote = '\"', escape = '\"', nullstr = '\\N'"

RAW_COLUMNS = {
    "raw_tracks": "{'id': 'BIGINT', 'name': 'VARCHAR', 'artist': 'VARCHAR', 'songwriters': 'VARCHAR', "
    "'duration': 'VARCHAR', 'genres': 'VARCHAR', 'album': 'VARCHAR', 'created_at': 'VARCHAR', 'updated_at': 'VARCHAR'}",
    "raw_users": "{'id': 'BIGINT', 'first_name': 'VARCHAR', 'last_name': 'VARCHAR', 'email': 'VARCHAR', "
    "'gender': 'VARCHAR', 'favorite_genres': 'VARCHAR', 'created_at': 'VARCHAR', 'updated_at': 'VARCHAR'}",
    "raw_listen_history": "{'user_id': 'BIGINT', 'items': 'VARCHAR', 'created_at': 'VARCHAR', 'updated_at': 'VARCHAR'}",
}

MINUTES_SECONDS = r"^(\d{1,3}):([0-5]\d)$"
HOURS_MINUTES_SECONDS = r"^(\d{1,2}):([0-5]\d):([0-5]\d)$"


def start_spark() -> tuple[object, float]:
    """Start the SparkSession the Spark resource would start; return it and the start time with a first job."""
    from pyspark.sql import SparkSession

    from etl_assets.resources.spark import SparkResource

    started = time.perf_counter()
    builder = SparkSession.builder
    for key, value in SparkResource().spark_conf().items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.range(1).count()
    return session, time.perf_counter() - started


def run_spark(data_dir: Path, partition: str) -> float:
    """Materialise the four Spark assets over raw partitions already on disk; return the seconds."""
    from dagster import materialize

    from etl_assets.assets.raw import raw_assets
    from etl_assets.assets.spark import spark_assets
    from etl_assets.definitions import build_resources
    from etl_assets.resources.storage import SnapshotStorage

    resources = build_resources(storage=SnapshotStorage(base_dir=str(data_dir)))
    started = time.perf_counter()
    result = materialize([*raw_assets, *spark_assets], selection=SPARK_ASSETS, partition_key=partition, resources=resources)
    seconds = time.perf_counter() - started
    if not result.success:
        raise RuntimeError("the Spark assets failed; see the Dagster output above")
    return seconds


def raw_source(data_dir: Path, name: str, partition: str) -> str:
    path = data_dir / name / partition / "part-00000.csv"
    return f"read_csv('{path}', {CSV_OPTIONS}, columns = {RAW_COLUMNS[name]})"


def duration_sql(column: str) -> str:
    text = f"trim({column})"
    return (
        f"CASE WHEN regexp_matches({text}, '{MINUTES_SECONDS}') "
        f"THEN CAST(regexp_extract({text}, '{MINUTES_SECONDS}', 1) AS INTEGER) * 60 "
        f"+ CAST(regexp_extract({text}, '{MINUTES_SECONDS}', 2) AS INTEGER) "
        f"WHEN regexp_matches({text}, '{HOURS_MINUTES_SECONDS}') "
        f"THEN CAST(regexp_extract({text}, '{HOURS_MINUTES_SECONDS}', 1) AS INTEGER) * 3600 "
        f"+ CAST(regexp_extract({text}, '{HOURS_MINUTES_SECONDS}', 2) AS INTEGER) * 60 "
        f"+ CAST(regexp_extract({text}, '{HOURS_MINUTES_SECONDS}', 3) AS INTEGER) END"
    )


def duckdb_statements(data_dir: Path, partition: str) -> list[str]:
    """Return the product's cleaning and join rules as DuckDB SQL over the raw CSV partitions."""
    newest = "QUALIFY row_number() OVER (PARTITION BY id ORDER BY updated_at DESC NULLS LAST, created_at DESC NULLS LAST) = 1"
    return [
        f"""CREATE OR REPLACE TABLE tracks AS
        WITH typed AS (
            SELECT id, trim(name) AS name, trim(artist) AS artist, trim(songwriters) AS songwriters,
                {duration_sql('duration')} AS duration_seconds, trim(genres) AS genres, trim(album) AS album,
                TRY_CAST(created_at AS TIMESTAMP) AS created_at, TRY_CAST(updated_at AS TIMESTAMP) AS updated_at
            FROM {raw_source(data_dir, 'raw_tracks', partition)})
        SELECT * FROM typed
        WHERE coalesce(name, '') <> '' AND coalesce(artist, '') <> '' AND duration_seconds IS NOT NULL
        {newest}""",
        f"""CREATE OR REPLACE TABLE users AS
        SELECT id, trim(first_name) AS first_name, trim(last_name) AS last_name, lower(trim(email)) AS email,
            trim(gender) AS gender, trim(favorite_genres) AS favorite_genres,
            TRY_CAST(created_at AS TIMESTAMP) AS created_at, TRY_CAST(updated_at AS TIMESTAMP) AS updated_at
        FROM {raw_source(data_dir, 'raw_users', partition)}
        WHERE id IS NOT NULL
        {newest}""",
        f"""CREATE OR REPLACE TABLE listen_events AS
        WITH parsed AS (
            SELECT user_id, items, created_at, updated_at,
                CASE WHEN json_valid(items) THEN TRY_CAST(items AS BIGINT[]) END AS track_ids
            FROM {raw_source(data_dir, 'raw_listen_history', partition)}),
        kept AS (
            SELECT * FROM parsed
            WHERE user_id IS NOT NULL AND items IS NOT NULL AND track_ids IS NOT NULL AND len(track_ids) > 0)
        SELECT user_id, unnest(track_ids) AS track_id, CAST(unnest(range(len(track_ids))) AS INTEGER) AS position,
            TRY_CAST(created_at AS TIMESTAMP) AS created_at, TRY_CAST(updated_at AS TIMESTAMP) AS updated_at
        FROM kept""",
        """CREATE OR REPLACE TABLE listening_activity AS
        SELECT e.user_id, e.track_id, e.position, e.created_at, e.updated_at,
            u.first_name AS user_first_name, u.last_name AS user_last_name, u.email AS user_email,
            u.gender AS user_gender, u.favorite_genres AS user_favorite_genres,
            t.name AS track_name, t.artist AS track_artist, t.songwriters AS track_songwriters, t.duration_seconds,
            t.genres AS track_genres, t.album AS track_album
        FROM listen_events e JOIN users u ON e.user_id = u.id JOIN tracks t ON e.track_id = t.id""",
    ]


def run_duckdb(data_dir: Path, partition: str, output_dir: Path):
    """Build the four tables in DuckDB and write each as CSV, as the Spark assets do; return (connection, seconds)."""
    import duckdb

    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.mkdir(parents=True)
    connection = duckdb.connect()
    started = time.perf_counter()
    for statement in duckdb_statements(data_dir, partition):
        connection.execute(statement)
    for name in SPARK_ASSETS:
        connection.execute(f"COPY {name} TO '{output_dir / name}.csv' (HEADER, QUOTE '\"', ESCAPE '\"', NULLSTR '\\N')")
    return connection, time.perf_counter() - started


def row_text_sql(columns: list[str], timestamps: set[str]) -> str:
    """Return SQL for one text line per row: timestamps in the Spark writer's format, nulls as \\N, fields joined by U+001F."""
    parts = []
    for column in columns:
        value = f"strftime({column}, '{TIMESTAMP_TEXT}')" if column in timestamps else f"CAST({column} AS VARCHAR)"
        parts.append(f"coalesce({value}, '\\N')")
    return "concat_ws(chr(31), " + ", ".join(parts) + ")"


def sorted_checksum(connection, relation: str, line_sql: str) -> str:
    """Return the SHA-256 of the rows' text lines in sorted order, streamed in batches so Python never keeps all lines."""
    digest = hashlib.sha256()
    cursor = connection.execute(f"SELECT {line_sql} AS line FROM {relation} ORDER BY line")
    while batch := cursor.fetchmany(50_000):
        for (line,) in batch:
            digest.update(line.encode("utf-8"))
            digest.update(b"\n")
    return digest.hexdigest()


def compare_outputs(connection, data_dir: Path, partition: str) -> dict[str, object]:
    """Compare the Spark outputs on disk with the DuckDB tables: row counts per table and a checksum of listening_activity.

    Raises AssertionError naming the first difference.
    """
    spark_counts, duckdb_counts = {}, {}
    for name in SPARK_ASSETS:
        folder = data_dir / name / partition
        spark_counts[name] = connection.execute(f"SELECT count(*) FROM read_csv('{folder}/*.csv', {CSV_OPTIONS}, all_varchar = true)").fetchone()[0]
        duckdb_counts[name] = connection.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    if spark_counts != duckdb_counts:
        raise AssertionError(f"row counts differ: Spark {spark_counts}, DuckDB {duckdb_counts}")

    # Spark wrote every value as text in its CSV, so its side is read as text and compared as written.
    spark_relation = f"read_csv('{data_dir / 'listening_activity' / partition}/*.csv', {CSV_OPTIONS}, all_varchar = true)"
    spark_checksum = sorted_checksum(connection, spark_relation, row_text_sql(ACTIVITY_COLUMNS, set()))
    duckdb_checksum = sorted_checksum(connection, "listening_activity", row_text_sql(ACTIVITY_COLUMNS, {"created_at", "updated_at"}))
    if spark_checksum != duckdb_checksum:
        raise AssertionError(
            f"listening_activity differs: Spark sha256 {spark_checksum}, DuckDB sha256 {duckdb_checksum} over {spark_counts['listening_activity']} rows"
        )
    return {"counts": spark_counts, "checksum": spark_checksum}
