"""The code location: what it defines, and what its schedule and sensors request."""

from datetime import datetime, timedelta, timezone

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    build_schedule_context,
    build_sensor_context,
    materialize,
)

from etl_assets.assets.raw import raw_assets
from etl_assets.automation import SCHEDULE_NAME, daily_snapshot_schedule, spark_refresh_job
from etl_assets.definitions import build_resources, defs
from etl_assets.resources.api import MoovitamixApi
from etl_assets.resources.storage import SnapshotStorage
from etl_assets_tests.pipeline import PARTITION

GROUPS = {
    "raw_tracks": "raw",
    "raw_users": "raw",
    "raw_listen_history": "raw",
    "tracks": "cleaned",
    "users": "cleaned",
    "listen_events": "cleaned",
    "listen_event_orphans": "joined",
    "listening_activity": "joined",
}
SENSORS = ["raw_listen_history_sensor", "raw_tracks_sensor", "raw_users_sensor"]


@pytest.fixture(scope="module")
def repository():
    return defs.get_repository_def()


def names(keys) -> list[str]:
    return sorted(key.to_user_string() for key in keys)


def test_defs_loadable():
    Definitions.validate_loadable(defs)


def test_defs_asset_groups(repository):
    graph = repository.asset_graph
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == GROUPS


def test_defs_jobs(repository):
    assert sorted(name for name in repository.job_names if not name.startswith("__")) == ["daily_snapshot_job", "spark_refresh_job"]


def test_daily_job_selects_every_asset(repository):
    job = repository.get_job("daily_snapshot_job")
    assert names(job.asset_layer.executable_asset_keys) == sorted(GROUPS)


def test_refresh_job_selects_spark_assets(repository):
    keys = spark_refresh_job.selection.resolve(repository.asset_graph)
    assert names(keys) == sorted(name for name, group in GROUPS.items() if group != "raw")


def test_defs_schedule(repository):
    schedules = repository.schedule_defs
    assert [schedule.name for schedule in schedules] == [SCHEDULE_NAME]
    assert schedules[0].cron_schedule == "0 6 * * *"
    assert schedules[0].execution_timezone == "UTC"
    assert schedules[0].job_name == "daily_snapshot_job"


def test_defs_sensors(repository):
    sensors = sorted(repository.sensor_defs, key=lambda sensor: sensor.name)
    assert [sensor.name for sensor in sensors] == SENSORS
    assert {sensor.job_name for sensor in sensors} == {"spark_refresh_job"}


@pytest.mark.parametrize(
    ("scheduled", "partition"),
    [
        (datetime(2026, 12, 4, 6, 0, tzinfo=timezone.utc), "2026-12-04"),
        (datetime(2026, 1, 1, 6, 0, tzinfo=timezone.utc), "2026-01-01"),
        # 22:00 in Montreal on the 3rd is 03:00 UTC on the 4th: the partition is the UTC day.
        (datetime(2026, 12, 3, 22, 0, tzinfo=timezone(timedelta(hours=-5))), "2026-12-04"),
    ],
)
def test_schedule_partition_and_run_key(repository, scheduled, partition):
    context = build_schedule_context(scheduled_execution_time=scheduled, repository_def=repository)
    requests = daily_snapshot_schedule.evaluate_tick(context).run_requests

    assert len(requests) == 1
    assert requests[0].partition_key == partition
    assert requests[0].run_key == partition


def materialize_raw_tracks(instance, base_url: str, data_dir, tags=None):
    raw_tracks = [asset for asset in raw_assets if asset.key == AssetKey("raw_tracks")]
    resources = build_resources(api=MoovitamixApi(base_url=base_url), storage=SnapshotStorage(base_dir=str(data_dir)))
    return materialize(raw_tracks, partition_key=PARTITION, resources=resources, instance=instance, tags=tags)


def evaluate_raw_tracks_sensor(instance, repository):
    sensor = repository.get_sensor_def("raw_tracks_sensor")
    context = build_sensor_context(instance=instance, repository_def=repository, sensor_name=sensor.name)
    return sensor.evaluate_tick(context)


def test_sensor_requests_downstream(ray_session, small_stand_in, repository, tmp_path):
    instance = DagsterInstance.ephemeral()
    run_id = materialize_raw_tracks(instance, small_stand_in.base_url, tmp_path).run_id
    result = evaluate_raw_tracks_sensor(instance, repository)

    assert result.skip_message is None
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.partition_key == PARTITION
    assert names(request.asset_selection) == ["listen_event_orphans", "listening_activity", "tracks"]
    assert request.run_key == f"raw_tracks:{PARTITION}:{run_id}"


def test_sensor_skips_schedule_run(ray_session, small_stand_in, repository, tmp_path):
    instance = DagsterInstance.ephemeral()
    materialize_raw_tracks(instance, small_stand_in.base_url, tmp_path, tags={"dagster/schedule_name": SCHEDULE_NAME})
    result = evaluate_raw_tracks_sensor(instance, repository)

    assert result.run_requests == []
    assert result.skip_message == f"raw_tracks {PARTITION} came from the schedule, whose run refreshes the Spark tables"
