"""The shell entry points: `dagster asset materialize` on the code location, and the errors of `etl-daily-run`."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from etl_assets.daily_run import failure_reason
from etl_assets.io_managers.csv_dialect import read_rows
from etl_assets_tests.pipeline import PARTITION

BIN = Path(sys.executable).parent
RAY_START_TIMEOUT = "The current node timed out during startup"
EVENT_COLUMNS = {"user_id": int, "track_id": int, "position": int, "created_at": str}


def run(command: list[str], tmp_path: Path, timeout: float, **env: str) -> subprocess.CompletedProcess:
    """Run a command in tmp_path with `env` in place of the caller's ETL_*, DAGSTER_* and STAND_IN_* variables."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("ETL_", "DAGSTER_", "STAND_IN_"))}
    environment.update(env)
    return subprocess.run(command, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


def closed_port() -> int:
    """Return a loopback port that nothing listens on: bound by the kernel, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def joined_events(server) -> list[tuple]:
    """Return (user_id, track_id, position, created_at) per served event whose user and track exist."""
    store = server.app.state.store
    user_ids = {row["id"] for row in store.snapshot("users")}
    track_ids = {row["id"] for row in store.snapshot("tracks")}
    events = []
    for record in store.snapshot("listen_history"):
        if record["user_id"] not in user_ids or not record["items"]:
            continue
        for position, track_id in enumerate(record["items"]):
            if track_id in track_ids:
                events.append((record["user_id"], track_id, position, record["created_at"]))
    return sorted(events)


def test_dagster_materialize_all(small_stand_in, tmp_path):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    data_dir = tmp_path / "data"
    command = [str(BIN / "dagster"), "asset", "materialize", "--select", "*", "--partition", PARTITION, "-m", "etl_assets.definitions"]
    env = {"ETL_API_BASE_URL": small_stand_in.base_url, "ETL_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(dagster_home)}
    result = run(command, tmp_path, 900, **env)

    # Ray 2.60 gives a new local node a fixed 30 s to register, which a loaded machine can miss, so try once more.
    if result.returncode != 0 and RAY_START_TIMEOUT in result.stderr:
        result = run(command, tmp_path, 900, **env)
    assert result.returncode == 0, result.stderr[-3000:]

    parts = sorted((data_dir / "listening_activity" / PARTITION).glob("part-*.csv"))
    rows = [row for part in parts for row in read_rows(str(part), EVENT_COLUMNS)]
    expected = joined_events(small_stand_in)
    assert len(rows) == len(expected)
    assert sorted((row["user_id"], row["track_id"], row["position"], row["created_at"]) for row in rows) == expected


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_daily_run_closed_port(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    result = run([str(BIN / "etl-daily-run")], tmp_path, 120, ETL_API_BASE_URL=url, ETL_DATA_DIR=str(tmp_path / "data"), DAGSTER_HOME=str(tmp_path / "home"))
    lines = error_lines(result)

    assert result.returncode == 1
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: the API at {url}/tracks is unreachable"), lines[0]
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("case", ["under_file", "read_only"])
def test_daily_run_unwritable_data_dir(small_stand_in, tmp_path, case):
    if case == "under_file":
        # A folder below a regular file cannot be created, whatever the user's privileges.
        (tmp_path / "file").write_text("")
        data_dir = tmp_path / "file" / "sub"
    else:
        if os.geteuid() == 0:
            pytest.skip("root ignores file modes, so a read-only folder is writable")
        data_dir = tmp_path / "read_only"
        data_dir.mkdir(mode=0o500)

    env = {"ETL_API_BASE_URL": small_stand_in.base_url, "ETL_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(tmp_path / "home")}
    result = run([str(BIN / "etl-daily-run")], tmp_path, 120, **env)
    lines = error_lines(result)

    assert result.returncode == 1
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: ETL_DATA_DIR {data_dir} is not writable"), lines[0]
    assert "Traceback" not in result.stdout + result.stderr


@pytest.fixture
def static_server(tmp_path):
    """A plain `python -m http.server` on loopback serving tmp_path/www: a web server that is not the API."""
    root = tmp_path / "www"
    root.mkdir()
    port = closed_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield root, f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=30)


@pytest.mark.parametrize("body", ["{not json", '{"data": []}', "<html>tracks</html>"])
def test_daily_run_not_the_api(static_server, tmp_path, body):
    root, url = static_server
    (root / "tracks").write_text(body)
    result = run([str(BIN / "etl-daily-run")], tmp_path, 120, ETL_API_BASE_URL=url, ETL_DATA_DIR=str(tmp_path / "data"), DAGSTER_HOME=str(tmp_path / "home"))
    lines = error_lines(result)

    assert result.returncode == 1
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: the API at {url}/tracks returned a page 1 without an `items` list"), lines[0]
    assert lines[0].endswith("check ETL_API_BASE_URL"), lines[0]


# The end of a run's output when a Ray actor died in a raw step, as Dagster 1.13 prints it.
ACTOR_DIED_LOG = """\
dagster._core.errors.DagsterExecutionStepExecutionError: Error occurred while executing op "raw_tracks"::

ray.exceptions.RayTaskError(ActorDiedError): ray::fetch_block() (pid=24299, ip=192.0.2.2)
ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.
	class_name: RequestBudget
Error: Materialization failed.
"""


def test_failure_reason_library_error():
    assert failure_reason(ACTOR_DIED_LOG, 1) == "ActorDiedError: The actor died unexpectedly before finishing this task."


def test_failure_reason_killed():
    reason = failure_reason("", -signal.SIGKILL)

    assert reason.startswith("`dagster asset materialize` was killed by SIGKILL"), reason


def child_pids(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_daily_run_interrupted(small_stand_in, tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ETL_", "DAGSTER_", "STAND_IN_"))}
    env.update(ETL_API_BASE_URL=small_stand_in.base_url, ETL_DATA_DIR=str(tmp_path / "data"), DAGSTER_HOME=str(tmp_path / "home"))

    # A shell that started pytest in the background may pass SIGINT on as ignored, so restore its default.
    launcher = subprocess.Popen(
        [str(BIN / "etl-daily-run")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert launcher.stdout is not None
    # The first progress line comes from Dagster, so its process is running by then.
    for line in launcher.stdout:
        if line.startswith("  "):
            break
    dagster = child_pids(launcher.pid)

    # Only the launcher gets the signal, as with `kill -INT`, so it must pass it on to Dagster.
    launcher.send_signal(signal.SIGINT)
    _, stderr = launcher.communicate(timeout=300)
    lines = [line for line in stderr.splitlines() if line.strip()]

    assert launcher.returncode == 130
    assert lines == ["error: interrupted; run it again to resume, pages already fetched are kept"]
    assert len(dagster) == 1
    assert not Path(f"/proc/{dagster[0]}").exists()
