"""The whole pipeline against the stand-in: every asset's rows, the files on disk, and a join checked by hand."""

import json
from pathlib import Path

import pytest

from etl_assets.contract import RAW_TABLES
from etl_assets.io_managers.csv_dialect import SPARK_READ_OPTIONS, read_rows
from etl_assets.schemas import LISTENING_ACTIVITY_SCHEMA, SPARK_SCHEMAS
from etl_assets.stand_in_api.server import serve_in_thread
from etl_assets.stand_in_api.settings import StandInSettings
from etl_assets_tests.pipeline import PARTITION, materialization_metadata, run_pipeline

# The day before PARTITION: the daily partitions end today, so a later day may not exist yet.
OTHER_PARTITION = "2026-12-03"
RAW_ASSETS = list(RAW_TABLES)
SPARK_ASSETS = ["tracks", "users", "listen_events", "listen_event_orphans", "listening_activity"]


def parse_duration(duration: str) -> int:
    """Return the seconds of an `MM:SS` duration."""
    minutes, seconds = duration.split(":")
    return int(minutes) * 60 + int(seconds)


def served_tables(server) -> dict[str, list[dict]]:
    store = server.app.state.store
    return {name: store.snapshot(table.endpoint) for name, table in RAW_TABLES.items()}


def events_of(history: list[dict]) -> list[tuple[int, int, int, dict]]:
    """Return (user_id, track_id, position, record) per track id of every record with a user id and items."""
    events = []
    for record in history:
        if record["user_id"] is None or not record["items"]:
            continue
        for position, track_id in enumerate(record["items"]):
            events.append((record["user_id"], track_id, position, record))
    return events


def file_state(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Return the inode, modification time and bytes of every file under a folder."""
    state = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            info = path.stat()
            state[str(path.relative_to(folder))] = (info.st_ino, info.st_mtime_ns, path.read_bytes())
    return state


def visible_files(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(path for path in folder.glob(pattern) if not path.name.startswith((".", "_")))


def spark_types(asset: str) -> dict[str, type]:
    """Map an output's columns to the types read_rows reads them as: ints as int, the rest as text."""
    return {
        column.name: int if column.dataType.typeName() in ("long", "integer") else str
        for column in SPARK_SCHEMAS[asset].fields
    }


def read_spark_output(folder: Path, asset: str) -> list[dict]:
    rows = []
    for part in visible_files(folder, "part-*.csv"):
        rows += read_rows(str(part), spark_types(asset))
    return rows


@pytest.fixture(scope="module")
def landed(spark_session, ray_session, small_stand_in, tmp_path_factory):
    """Run every asset for PARTITION, record its files, then land raw_tracks and tracks for OTHER_PARTITION."""
    data_dir = tmp_path_factory.mktemp("landed")
    result = run_pipeline(small_stand_in.base_url, data_dir)
    first_state = {asset: file_state(data_dir / asset / PARTITION) for asset in RAW_ASSETS + SPARK_ASSETS}

    from etl_assets.assets.raw import raw_assets
    from etl_assets.assets.spark import tracks

    raw_tracks = [asset for asset in raw_assets if asset.key.to_user_string() == "raw_tracks"]
    run_pipeline(small_stand_in.base_url, data_dir, partition=OTHER_PARTITION, assets=[*raw_tracks, tracks])
    return {"result": result, "data_dir": data_dir, "first_state": first_state, "truth": served_tables(small_stand_in)}


def expected_row_counts(tables: dict[str, list[dict]]) -> dict[str, int]:
    track_ids = {row["id"] for row in tables["raw_tracks"]}
    user_ids = {row["id"] for row in tables["raw_users"]}
    events = events_of(tables["raw_listen_history"])
    joined = [event for event in events if event[0] in user_ids and event[1] in track_ids]
    return {
        "raw_tracks": len(tables["raw_tracks"]),
        "raw_users": len(tables["raw_users"]),
        "raw_listen_history": len(tables["raw_listen_history"]),
        "tracks": len(track_ids),
        "users": len(user_ids),
        "listen_events": len(events),
        "listen_event_orphans": len(events) - len(joined),
        "listening_activity": len(joined),
    }


def test_materialized_assets_exact(landed):
    names = {event.asset_key.to_user_string() for event in landed["result"].get_asset_materialization_events()}
    assert names == set(RAW_ASSETS + SPARK_ASSETS)


@pytest.mark.parametrize("asset", RAW_ASSETS + SPARK_ASSETS)
def test_row_count_metadata(landed, asset):
    expected = expected_row_counts(landed["truth"])[asset]
    assert materialization_metadata(landed["result"], asset)["row_count"] == expected


def test_listen_events_counts_track_ids(landed):
    history = landed["truth"]["raw_listen_history"]
    track_ids = sum(len(record["items"]) for record in history if record["user_id"] is not None and record["items"])
    metadata = materialization_metadata(landed["result"], "listen_events")

    assert metadata["row_count"] == track_ids
    assert metadata["rows_kept_by_rules"] == len(history)
    # An exploded table is not de-duplicated, so it must not report older duplicates.
    assert "dropped_older_duplicates" not in metadata


def test_tracks_duration_seconds_known_rows(landed, spark_session):
    folder = landed["data_dir"] / "tracks" / PARTITION
    frame = spark_session.read.schema(SPARK_SCHEMAS["tracks"]).options(**SPARK_READ_OPTIONS).csv(str(folder))
    written = {row["id"]: row["duration_seconds"] for row in frame.select("id", "duration_seconds").collect()}

    served = landed["truth"]["raw_tracks"]
    for row in [served[0], served[len(served) // 2], served[-1]]:
        assert written[row["id"]] == parse_duration(row["duration"]), row


@pytest.mark.parametrize("asset", RAW_ASSETS)
def test_raw_file_values_as_served(landed, asset):
    table = RAW_TABLES[asset]
    rows = read_rows(str(landed["data_dir"] / asset / PARTITION / "part-00000.csv"), table.fields)

    # The file stores `items` as JSON text, so parse it back before comparing with the served list.
    if "items" in table.fields:
        rows = [{**row, "items": None if row["items"] is None else json.loads(row["items"])} for row in rows]
    assert rows == landed["truth"][asset]


@pytest.mark.parametrize("asset", RAW_ASSETS)
def test_raw_partition_files(landed, asset):
    folder = landed["data_dir"] / asset / PARTITION
    names = sorted(path.name for path in folder.iterdir())
    header = (folder / "part-00000.csv").read_text(encoding="utf-8").split("\n", 1)[0]

    assert names == ["_manifest.json", "_rejects.csv", "part-00000.csv"]
    assert header == ",".join(RAW_TABLES[asset].columns)


@pytest.mark.parametrize("asset", SPARK_ASSETS)
def test_spark_partition_files(landed, asset):
    parts = visible_files(landed["data_dir"] / asset / PARTITION, "part-*.csv")
    headers = {part.read_text(encoding="utf-8").split("\n", 1)[0] for part in parts}

    assert headers == {",".join(SPARK_SCHEMAS[asset].fieldNames())}


def test_data_dir_asset_folders(landed):
    names = sorted(path.name for path in visible_files(landed["data_dir"]))
    assert names == sorted(RAW_ASSETS + SPARK_ASSETS)


@pytest.mark.parametrize("asset", RAW_ASSETS + SPARK_ASSETS)
def test_partition_folders_per_asset(landed, asset):
    expected = sorted([PARTITION, OTHER_PARTITION]) if asset in ("raw_tracks", "tracks") else [PARTITION]
    names = sorted(path.name for path in visible_files(landed["data_dir"] / asset))
    assert names == expected


@pytest.mark.parametrize("asset", RAW_ASSETS + SPARK_ASSETS)
def test_other_partition_leaves_first(landed, asset):
    assert file_state(landed["data_dir"] / asset / PARTITION) == landed["first_state"][asset]


def test_other_partition_tracks_rows(landed):
    rows = read_spark_output(landed["data_dir"] / "tracks" / OTHER_PARTITION, "tracks")
    assert sorted(row["id"] for row in rows) == sorted(row["id"] for row in landed["truth"]["raw_tracks"])


def expected_activity(tables: dict[str, list[dict]]) -> list[dict]:
    """Join the served tables in plain Python, applying the cleaning rules of tracks and users."""
    users = {row["id"]: row for row in tables["raw_users"]}
    tracks = {row["id"]: row for row in tables["raw_tracks"]}
    rows = []
    for user_id, track_id, position, record in events_of(tables["raw_listen_history"]):
        if user_id not in users or track_id not in tracks:
            continue
        user, track = users[user_id], tracks[track_id]
        rows.append(
            {
                "user_id": user_id,
                "track_id": track_id,
                "position": position,
                # Spark writes timestamps in UTC with microseconds, the served ISO text exactly.
                "created_at": record["created_at"],
                "updated_at": record["updated_at"],
                "user_first_name": user["first_name"].strip(),
                "user_last_name": user["last_name"].strip(),
                "user_email": user["email"].strip().lower(),
                "user_gender": user["gender"].strip(),
                "user_favorite_genres": user["favorite_genres"].strip(),
                "track_name": track["name"].strip(),
                "track_artist": track["artist"].strip(),
                "track_songwriters": track["songwriters"].strip(),
                "duration_seconds": parse_duration(track["duration"]),
                "track_genres": track["genres"].strip(),
                "track_album": track["album"].strip(),
            }
        )
    return rows


def sort_key(row: dict) -> tuple:
    return (row["user_id"], row["created_at"], row["position"], row["track_id"])


def test_listening_activity_tiny_by_hand(spark_session, ray_session, tmp_path):
    with serve_in_thread(StandInSettings(seed=11, tracks=4, users=3, listen_history=3)) as server:
        run_pipeline(server.base_url, tmp_path)
        tables = served_tables(server)

    written = read_spark_output(tmp_path / "listening_activity" / PARTITION, "listening_activity")
    expected = expected_activity(tables)

    assert list(written[0]) == LISTENING_ACTIVITY_SCHEMA.fieldNames()
    assert len(expected) == 15
    assert sorted(written, key=sort_key) == sorted(expected, key=sort_key)

