"""`etl-daily-run`, behind `make run`: materialise every asset for one day from the shell.

Starts the bundled stand-in API on a free loopback port unless ETL_API_BASE_URL
is set, runs `dagster asset materialize`, prints where the outputs are, and
stops the stand-in whatever happens. Dagster's full output goes to a log file;
the terminal gets progress lines and, on failure, the one line that says why.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import requests

from etl_assets.preflight import PreflightError, check_java
from etl_assets.resources.api_client import describe_error, redact_url
from etl_assets.resources.storage import SnapshotStorage

STAND_IN_START_SECONDS = 120
# How long Dagster gets to stop its run after Ctrl-C before the launcher stops waiting.
INTERRUPT_WAIT_SECONDS = 120
PROGRESS = re.compile(r" - (INFO|WARNING|ERROR) - ")
# Exception lines of this project, or Dagster's Failure, as printed in a traceback.
ERROR_LINE = re.compile(r"^(?:etl_assets\.[\w.]+|dagster\._core\.definitions\.events\.Failure|(?:\w+\.)*\w*Error|PermissionError)[:]\s.+")
# Lines that only report that a step or the run failed, without the cause.
GENERIC_ERRORS = ("Error: Materialization failed.", "DagsterExecutionStepExecutionError:")


def start_stand_in(work_dir: Path) -> tuple[subprocess.Popen, str]:
    port_file = work_dir / "stand_in.port"
    log = open(work_dir / "stand_in.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "etl_assets.stand_in_api.cli", "--port", "0", "--port-file", str(port_file)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + STAND_IN_START_SECONDS
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return process, f"http://127.0.0.1:{port_file.read_text().strip()}"
        if process.poll() is not None:
            raise PreflightError(f"the stand-in API exited at start: {(work_dir / 'stand_in.log').read_text().strip()[-300:]}")
        time.sleep(0.2)
    process.terminate()
    raise PreflightError(
        f"the stand-in API did not start within {STAND_IN_START_SECONDS} s: {(work_dir / 'stand_in.log').read_text().strip()[-300:]}"
    )


def check_api(base_url: str) -> None:
    url = f"{base_url.rstrip('/')}/tracks"
    try:
        response = requests.get(url, params={"page": 1, "size": 1}, timeout=10)
    except requests.RequestException as error:
        raise PreflightError(
            f"the API at {redact_url(url)} is unreachable ({describe_error(error)}); "
            "check ETL_API_BASE_URL or unset it to use the bundled stand-in"
        ) from None
    if response.status_code != 200:
        raise PreflightError(f"the API at {redact_url(url)} returned HTTP {response.status_code} for page 1; check ETL_API_BASE_URL")

    # A web server that is not the API often responds with 200 too, with HTML or other JSON.
    try:
        page = response.json()
    except ValueError:
        page = None
    if not isinstance(page, dict) or not isinstance(page.get("items"), list) or not isinstance(page.get("total"), int):
        raise PreflightError(
            f"the API at {redact_url(url)} returned a page 1 without an `items` list and an integer `total` "
            f"(body starts {response.text[:80]!r}); check ETL_API_BASE_URL"
        )


def failure_reason(log_text: str, returncode: int) -> str:
    """Pick the most specific error line of a failed Dagster run's output."""
    if returncode < 0:
        return (
            f"`dagster asset materialize` was killed by {signal.Signals(-returncode).name}; "
            "run it again to resume, pages already fetched are kept"
        )
    lines = [line.strip() for line in log_text.splitlines()]
    candidates = [line for line in lines if ERROR_LINE.match(line) and not drop_module(line).startswith(GENERIC_ERRORS)]
    specific = [line for line in candidates if line.startswith("etl_assets.") or "Failure" in line]
    chosen = (specific or candidates or ["the run failed; see the log"])[-1]
    return drop_module(chosen)


def drop_module(error_line: str) -> str:
    """Remove the module path before the exception name: `ray.exceptions.ActorDiedError: …` to `ActorDiedError: …`."""
    return re.sub(r"^[\w.]+\.", "", error_line)


def materialize(partition: str, env: dict[str, str], log_path: Path) -> int:
    """Run `dagster asset materialize` for every asset, print its progress lines, and return its exit status."""
    command = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "--select", "*", "--partition", partition, "-m", "etl_assets.definitions"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        try:
            for line in process.stdout:
                log.write(line)
                if PROGRESS.search(line) and "DEBUG" not in line:
                    print("  " + line.split(" - ", 5)[-1].strip()[:200], flush=True)
        except KeyboardInterrupt:
            # Ctrl-C in a terminal reaches Dagster too, but `kill -INT` of this process alone does not.
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=INTERRUPT_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
        return process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(prog="etl-daily-run", description="Materialise every asset for one UTC day.")
    parser.add_argument("--partition", default=datetime.now(timezone.utc).strftime("%Y-%m-%d"), help="day to land, YYYY-MM-DD (default: today, UTC)")
    args = parser.parse_args()

    env = dict(os.environ)
    dagster_home = Path(env.setdefault("DAGSTER_HOME", str(Path.cwd() / ".dagster_home")))
    dagster_home.mkdir(parents=True, exist_ok=True)
    storage = SnapshotStorage()
    env["ETL_DATA_DIR"] = storage.base_dir
    stand_in = None
    work_dir = Path(tempfile.mkdtemp(prefix="etl-run-"))
    try:
        check_java()
        storage.check_writable()
        if env.get("ETL_API_BASE_URL"):
            check_api(env["ETL_API_BASE_URL"])
        else:
            stand_in, env["ETL_API_BASE_URL"] = start_stand_in(work_dir)
            print(f"Serving the bundled stand-in API at {env['ETL_API_BASE_URL']}")

        print(f"Materialising every asset for {args.partition} (DAGSTER_HOME={dagster_home})")
        log_path = dagster_home / "last_run.log"
        started = time.monotonic()
        returncode = materialize(args.partition, env, log_path)
        if returncode != 0:
            print(f"error: {failure_reason(log_path.read_text(), returncode)}", file=sys.stderr)
            print(f"Full Dagster output: {log_path}", file=sys.stderr)
            return 1
    except (PreflightError, PermissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; run it again to resume, pages already fetched are kept", file=sys.stderr)
        return 130
    finally:
        if stand_in is not None:
            stand_in.terminate()
            stand_in.wait(timeout=30)
        shutil.rmtree(work_dir, ignore_errors=True)

    print(f"Done in {time.monotonic() - started:.1f} s. Outputs for {args.partition}:")
    for asset in sorted(path.name for path in storage.root.iterdir() if not path.name.startswith(".")):
        print(f"  {storage.partition_path(asset, args.partition)}")
    print("Browse the runs with `make dev`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
