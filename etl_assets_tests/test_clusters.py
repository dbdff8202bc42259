"""The same definitions, configured only by environment, against a real Ray head and Spark standalone cluster.

The runs go through `dagster asset materialize` in a subprocess, because this test
process already runs the session's local SparkSession and local Ray, and a
process can have only one SparkSession and join only one Ray cluster.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from etl_assets.stand_in_api.server import serve_in_thread
from etl_assets_tests.clusters import LOOPBACK_SPARK_ENV, RayHead, SparkStandalone, free_port, wait_for
from etl_assets_tests.conftest import SMALL
from etl_assets_tests.pipeline import PARTITION

# Starting both clusters and running every asset took about 6 minutes on a loaded 2-core machine;
# the module fixtures count towards the first test's timeout.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1500)]

RUN_TIMEOUT_SECONDS = 600
# Ray tasks per endpoint: IngestionConfig.ray_tasks defaults to the cluster's CPUs.
RAY_HEAD_CPUS = 2


@dataclass
class CliRun:
    returncode: int
    output: str
    seconds: float
    data_dir: Path


def run_cli(select: str, work_dir: Path, env: dict[str, str]) -> CliRun:
    """Run `dagster asset materialize` for one partition with `env` on top of this process's variables."""
    data_dir = work_dir / "data"
    dagster_home = work_dir / "dagster_home"
    data_dir.mkdir(exist_ok=True)
    dagster_home.mkdir(exist_ok=True)
    child_env = {
        **os.environ,
        **LOOPBACK_SPARK_ENV,
        # Empty means local Ray and local Spark, whatever the caller's shell has set.
        "ETL_RAY_ADDRESS": "",
        "ETL_SPARK_MASTER": "",
        "PYSPARK_PYTHON": sys.executable,
        "ETL_DATA_DIR": str(data_dir),
        "DAGSTER_HOME": str(dagster_home),
        **env,
    }
    child_env.pop("RAY_ADDRESS", None)

    command = [
        str(Path(sys.executable).parent / "dagster"), "asset", "materialize",
        "--select", select, "--partition", PARTITION, "-m", "etl_assets.definitions",
    ]
    started = time.monotonic()
    completed = subprocess.run(
        command, env=child_env, cwd=work_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=RUN_TIMEOUT_SECONDS
    )
    seconds = time.monotonic() - started
    (work_dir / "dagster_output.log").write_text(completed.stdout)
    return CliRun(completed.returncode, completed.stdout, seconds, data_dir)


def count_rows(folder: Path) -> int:
    """Count data rows in every part-*.csv of a partition folder; each part starts with a header."""
    rows = 0
    for path in sorted(folder.glob("part-*.csv")):
        with path.open(newline="") as stream:
            rows += sum(1 for _ in csv.reader(stream)) - 1
    return rows


def step_seconds(output: str, step: str) -> float:
    """Return the seconds between a step's STEP_START and its STEP_SUCCESS or STEP_FAILURE in Dagster's log."""
    times = {}
    for line in output.splitlines():
        for event in ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE"):
            if f" - {step} - {event} - " in line:
                times[event] = datetime.strptime(line[:25], "%Y-%m-%d %H:%M:%S %z")
    end = times.get("STEP_FAILURE") or times.get("STEP_SUCCESS")
    if "STEP_START" not in times or end is None:
        raise AssertionError(f"step {step} did not start and finish in the output")
    return (end - times["STEP_START"]).total_seconds()


def output_tail(output: str, lines: int = 60) -> str:
    return "\n".join(output.splitlines()[-lines:])


@pytest.fixture(scope="module")
def stand_in():
    with serve_in_thread(SMALL) as server:
        yield server


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    """A Ray head and a Spark master and worker on 127.0.0.1, stopped after the module."""
    work_dir = tmp_path_factory.mktemp("clusters")
    ray_head = RayHead(work_dir, cpus=RAY_HEAD_CPUS)
    spark = SparkStandalone(work_dir)
    try:
        # One after the other: the Spark JVMs starting could make the raylet miss its fixed 30 s to register.
        started = time.monotonic()
        ray_head.start()
        spark.start()
        print(f"Ray head and Spark standalone ready in {time.monotonic() - started:.0f} s")
        yield ray_head, spark
    finally:
        ray_head.stop()
        spark.stop()
        ray_head.remove_temp_dir()


@pytest.fixture(scope="module")
def cluster_run(clusters, stand_in, tmp_path_factory):
    """Every asset of one partition, materialised on the Ray head and the Spark cluster."""
    ray_head, spark = clusters
    env = {
        **ray_head.client_env(),
        "ETL_RAY_ADDRESS": ray_head.address,
        "ETL_SPARK_MASTER": spark.url,
        "ETL_API_BASE_URL": stand_in.base_url,
    }
    run = run_cli("*", tmp_path_factory.mktemp("cluster_run"), env)
    print(f"dagster asset materialize on the clusters: exit code {run.returncode} in {run.seconds:.0f} s")
    return run


def failure_context(run: CliRun, ray_head: RayHead, spark: SparkStandalone) -> str:
    return f"{output_tail(run.output)}\n{ray_head.logs()}\n{spark.logs()}"


def test_cluster_run_succeeds(cluster_run, clusters):
    assert cluster_run.returncode == 0, failure_context(cluster_run, *clusters)


@pytest.mark.parametrize("asset_name", ["raw_tracks", "raw_users", "raw_listen_history"])
def test_cluster_run_raw_rows(cluster_run, stand_in, asset_name):
    endpoint = asset_name.removeprefix("raw_")
    expected = len(stand_in.app.state.store.snapshot(endpoint))

    assert count_rows(cluster_run.data_dir / asset_name / PARTITION) == expected


def test_cluster_run_joined_rows(cluster_run, stand_in):
    store = stand_in.app.state.store
    track_ids = {row["id"] for row in store.snapshot("tracks")}
    user_ids = {row["id"] for row in store.snapshot("users")}
    events = [(record["user_id"], track_id) for record in store.snapshot("listen_history") for track_id in record["items"]]
    known = [event for event in events if event[0] in user_ids and event[1] in track_ids]

    assert count_rows(cluster_run.data_dir / "listen_events" / PARTITION) == len(events)
    assert count_rows(cluster_run.data_dir / "listening_activity" / PARTITION) == len(known)
    assert count_rows(cluster_run.data_dir / "listen_event_orphans" / PARTITION) == len(events) - len(known)


def test_cluster_run_joins_ray_head(cluster_run, clusters):
    ray_head, _ = clusters

    assert f"Connected to Ray cluster at {ray_head.address} with {RAY_HEAD_CPUS} CPUs" in cluster_run.output


def test_cluster_run_ray_tasks(cluster_run, clusters):
    ray_head, _ = clusters
    # Page 1 is fetched by the driver; the other pages are split into at most RAY_HEAD_CPUS tasks.
    expected = 0
    for asset_name in ["raw_tracks", "raw_users", "raw_listen_history"]:
        manifest = json.loads((cluster_run.data_dir / asset_name / PARTITION / "_manifest.json").read_text())
        expected += min(RAY_HEAD_CPUS, manifest["pages"] - 1)

    # A worker may flush its log after the driver has gone.
    wait_for(lambda: ray_head.started_tasks("fetch_block") >= expected, 30)
    assert ray_head.started_tasks("fetch_block") == expected, ray_head.logs()


def test_cluster_run_spark_app(cluster_run, clusters):
    _, spark = clusters

    # The master marks the application completed shortly after the driver stops its session.
    wait_for(lambda: len(spark.completed_apps()) >= 1, 60)
    apps = [(app["name"], app["state"]) for app in spark.completed_apps()]
    assert apps == [("etl_assets", "FINISHED")], spark.logs()


def test_ray_closed_port(tmp_path, stand_in):
    closed = free_port()
    env = {"ETL_RAY_ADDRESS": f"127.0.0.1:{closed}", "ETL_API_BASE_URL": stand_in.base_url}

    run = run_cli("raw_tracks", tmp_path, env)

    assert run.returncode == 1, output_tail(run.output)
    message = f"RayClusterUnreachable: could not connect to the Ray cluster at 127.0.0.1:{closed} (Connection refused)"
    assert message in run.output, output_tail(run.output)


def test_spark_closed_port(tmp_path, cluster_run, stand_in):
    # The Spark step reads raw_tracks from disk before it needs a session, so the partition comes from the cluster run.
    raw_partition = cluster_run.data_dir / "raw_tracks" / PARTITION
    shutil.copytree(raw_partition, tmp_path / "data" / "raw_tracks" / PARTITION)
    closed = free_port()
    env = {"ETL_SPARK_MASTER": f"spark://127.0.0.1:{closed}", "ETL_API_BASE_URL": stand_in.base_url}

    run = run_cli("tracks", tmp_path, env)

    assert run.returncode == 1, output_tail(run.output)
    message = f"SparkUnavailable: could not connect to the Spark master at spark://127.0.0.1:{closed} (127.0.0.1:{closed}: Connection refused)"
    assert message in run.output, output_tail(run.output)
    # Without the probe, Spark 4.0.1 spent about 100 s retrying before this step failed.
    assert step_seconds(run.output, "tracks") < 45, output_tail(run.output)
