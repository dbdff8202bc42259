"""Whole runs in their own processes: `etl-daily-run` end to end, and the memory growth of one Dagster run."""

import logging
import os
from pathlib import Path

from harness import VENV_BIN, StandInProcess, run_with_time, shell_command

REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("bench.runs")
# The Dagster run process: `dagster asset materialize`, started by etl-daily-run or by this script.
DRIVER_MARKER = "asset materialize"
GROWTH_SELECTION = "raw_listen_history,listen_events"


def fresh_env(work_dir: Path, label: str, changes: dict[str, str]) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("STAND_IN_", "ETL_"))}
    env["ETL_DATA_DIR"] = str(work_dir / label / "data")
    env["DAGSTER_HOME"] = str(work_dir / label / "dagster_home")
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    env.update(changes)
    return env


def daily_run(work_dir: Path, label: str, size_env: dict[str, str]):
    command = [str(VENV_BIN / "etl-daily-run")]
    env = fresh_env(work_dir, label, size_env)
    run = run_with_time(command, env, DRIVER_MARKER, work_dir / f"{label}.log")
    if run.returncode != 0:
        raise RuntimeError(f"{shell_command(command, size_env)} failed with exit code {run.returncode}; see {run.log_path}")
    return run


def measure_end_to_end(sizes, repeats: int, work_dir: Path) -> dict:
    """Time `etl-daily-run` at the stand-in's default size (`repeats` runs) and at the large size (one run)."""
    large_env = {
        "STAND_IN_TRACKS": str(sizes.tracks),
        "STAND_IN_USERS": str(sizes.users),
        "STAND_IN_LISTEN_HISTORY": str(sizes.listen_history),
    }
    default_runs = []
    for attempt in range(repeats):
        log.info(f"etl-daily-run at the default size, run {attempt + 1} of {repeats}")
        default_runs.append(daily_run(work_dir, f"e2e-default-{attempt}", {}))
    log.info("etl-daily-run at the large size, once")
    large = daily_run(work_dir, "e2e-large", large_env)
    return {"default": default_runs, "large": large, "large_env": large_env}


def measure_growth(sizes, work_dir: Path, partition: str) -> dict:
    """Materialise raw_listen_history and listen_events at two sizes and record the run process's peak RSS."""
    runs = {}
    for records in (sizes.listen_history, sizes.growth_listen_history):
        with StandInProcess(sizes.tracks, sizes.users, records) as server:
            command = [
                str(VENV_BIN / "dagster"), "asset", "materialize", "--select", GROWTH_SELECTION,
                "--partition", partition, "-m", "etl_assets.definitions",
            ]
            log.info(f"growth: {records} listening records")
            env = fresh_env(work_dir, f"growth-{records}", {"ETL_API_BASE_URL": server.base_url})
            run = run_with_time(command, env, DRIVER_MARKER, work_dir / f"growth-{records}.log")
            if run.returncode != 0:
                raise RuntimeError(f"{shell_command(command)} failed with exit code {run.returncode}; see {run.log_path}")
            runs[records] = run
    display_command = ["/usr/bin/time", "-v", os.path.relpath(command[0], REPO), *command[1:]]
    return {"runs": runs, "command": shell_command(display_command, {"ETL_API_BASE_URL": "http://127.0.0.1:PORT"})}
