"""A Ray head and a Spark standalone master and worker on 127.0.0.1, started and stopped by a test.

Each cluster runs in its own session (`start_new_session=True`), so stopping it
signals only the processes of that session: never `ray stop` or `stop-master.sh`,
which would also stop the clusters of other users of this machine.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

VENV_BIN = Path(sys.executable).parent
SPARK_HOME = Path(pyspark.__file__).parent
START_TIMEOUT_SECONDS = 180
STOP_TIMEOUT_SECONDS = 60
LOG_TAIL_LINES = 40

# Ray 2.60 replaces a loopback --node-ip-address with the address of the default route and binds
# its services there. With this variable false, every service stays on 127.0.0.1.
LOOPBACK_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# Spark binds its RPC and web UI to SPARK_LOCAL_IP, else to every interface.
LOOPBACK_SPARK_ENV = {"SPARK_LOCAL_IP": "127.0.0.1", "SPARK_PUBLIC_DNS": "127.0.0.1"}


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_port_range(count: int) -> int:
    """Return the first of `count` consecutive free loopback ports below the ephemeral range.

    Ray's default worker ports (10002-19999) are shared with every other Ray on the
    machine, so each test head gets its own range between 20000 and 32000.
    """
    for _ in range(200):
        first = 20000 + secrets.randbelow(12000 - count)
        if all(is_free(port) for port in range(first, first + count)):
            return first
    raise RuntimeError(f"found no {count} consecutive free ports between 20000 and 32000")


def is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last lines of a log file, or a note when it does not exist."""
    if not path.exists():
        return f"({path} does not exist)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- last {len(text)} lines of {path} ---\n" + "\n".join(text)


def error_lines(path: Path, lines: int = 20) -> str:
    """Return the last warning, error and fatal lines of a Ray C++ log (`[time W|E|F pid tid]`)."""
    if not path.exists():
        return f"({path} does not exist)"
    found = [line for line in path.read_text(errors="replace").splitlines() if re.match(r"\[[^\]]* [WEF] \d+ \d+\]", line)]
    return f"--- last {min(lines, len(found))} warnings and errors of {path} ---\n" + "\n".join(found[-lines:])


def wait_for(condition: Callable[[], bool], timeout_seconds: float) -> bool:
    """Poll `condition` every second until it is true or the timeout passes; return its last value."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(1)
    return condition()


def wait_until(condition: Callable[[], bool], timeout_seconds: float, describe: Callable[[], str]) -> None:
    """Poll `condition` every second; raise TimeoutError with `describe()` when it stays false."""
    if not wait_for(condition, timeout_seconds):
        raise TimeoutError(f"timed out after {timeout_seconds} s: {describe()}")


def session_processes(session_id: int) -> list[int]:
    """Return the ids of the live processes in one session."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == session_id:
                members.append(int(entry.name))
        except (ProcessLookupError, PermissionError):
            continue
    return members


def stop_session(process: subprocess.Popen, timeout_seconds: float = STOP_TIMEOUT_SECONDS) -> None:
    """Send SIGTERM to a session leader, wait for it, then SIGKILL whatever is left of its session.

    Ray workers put themselves in their own process group but stay in the session,
    so a process-group kill would miss them.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    # Children get a moment to exit after their parent; the leader's id is the session id.
    deadline = time.monotonic() + 10
    while session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in session_processes(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_session(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start `command` as the leader of a new session with stdout and stderr in `log`."""
    with log.open("wb") as output:
        return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


class RayStartFailed(RuntimeError):
    pass


@dataclass
class RayHead:
    """A single-node Ray cluster started with `ray start --head --block`."""

    work_dir: Path
    cpus: int = 2
    port: int = 0
    temp_dir: Path | None = None
    token_path: Path | None = None
    process: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client_env(self) -> dict[str, str]:
        """Return the variables a driver needs to join this head: its token and loopback addressing."""
        return {**LOOPBACK_RAY_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)}

    def start(self, attempts: int = 3) -> RayHead:
        """Start the head, again with new ports when `ray start` exits early.

        Ray 2.60 gives the raylet a fixed 30 s to register with the GCS, which a
        loaded machine can miss ("The current node timed out during startup").
        """
        for attempt in range(1, attempts + 1):
            self.launch()
            try:
                self.wait_ready()
                return self
            except RayStartFailed as error:
                if attempt == attempts:
                    raise
                print(f"`ray start` failed on attempt {attempt} of {attempts}, starting it again: {str(error).splitlines()[0]}")
                self.stop()
                self.remove_temp_dir()
        return self

    def launch(self) -> None:
        # `ray start` turns token authentication on; a token of our own keeps ~/.ray untouched.
        self.token_path = self.work_dir / "ray_token"
        self.token_path.write_text(secrets.token_hex(32))
        self.token_path.chmod(0o600)

        # Unix socket paths are limited to 107 bytes, so the session folder needs a short root.
        self.temp_dir = Path(os.path.realpath(os.path.join("/tmp", f"ray-{secrets.token_hex(4)}")))
        self.temp_dir.mkdir()
        self.port = free_port()
        first_worker_port = free_port_range(32)
        service_ports = {
            "--node-manager-port": free_port(),
            "--object-manager-port": free_port(),
            "--ray-client-server-port": free_port(),
            "--dashboard-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(),
            "--metrics-export-port": free_port(),
        }
        command = [
            str(VENV_BIN / "ray"), "start", "--head", "--block",
            "--node-ip-address", "127.0.0.1",
            "--port", str(self.port),
            "--num-cpus", str(self.cpus),
            "--include-dashboard", "false",
            "--disable-usage-stats",
            "--temp-dir", str(self.temp_dir),
            "--min-worker-port", str(first_worker_port),
            "--max-worker-port", str(first_worker_port + 31),
        ]
        for option, port in service_ports.items():
            command += [option, str(port)]

        self.log = self.work_dir / "ray_head.log"
        env = {**os.environ, **self.client_env()}
        env.pop("RAY_ADDRESS", None)
        self.process = start_session(command, env, self.log)

    def wait_ready(self) -> None:
        wait_until(self.is_ready, START_TIMEOUT_SECONDS, lambda: f"the Ray head at {self.address} did not start\n{self.logs()}")

    def is_ready(self) -> bool:
        if self.process.poll() is not None:
            raise RayStartFailed(f"`ray start` exited with code {self.process.returncode}\n{self.logs()}")
        return "Ray runtime started" in self.log.read_text(errors="replace")

    def worker_logs(self) -> list[Path]:
        return sorted((self.temp_dir / "session_latest" / "logs").glob("worker-*.out"))

    def started_tasks(self, name: str) -> int:
        """Count the task starts named `name` in the stdout logs of this head's workers.

        Ray writes a `:task_name:<name>` line to a worker's stdout log before each task it runs.
        """
        marker = f":task_name:{name}"
        return sum(line == marker for path in self.worker_logs() for line in path.read_text(errors="replace").splitlines())

    def logs(self) -> str:
        parts = [tail(self.log)]
        if self.temp_dir is not None:
            session_logs = self.temp_dir / "session_latest" / "logs"
            parts += [error_lines(session_logs / "raylet.out"), error_lines(session_logs / "gcs_server.out")]
        return "\n".join(parts)

    def stop(self) -> None:
        # SIGTERM makes `ray start --block` drain the node (up to 30 s) and stop its processes.
        if self.process is not None:
            stop_session(self.process)

    def remove_temp_dir(self) -> None:
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


@dataclass
class SparkStandalone:
    """A Spark standalone master and one worker, launched with the pyspark package's own spark-class."""

    work_dir: Path
    cores: int = 1
    memory: str = "1g"
    port: int = 0
    webui_port: int = 0
    processes: list[subprocess.Popen] = field(default_factory=list)
    master_log: Path | None = None
    worker_log: Path | None = None

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        # Executors run Python from the same virtual environment as the driver.
        return {**os.environ, **LOOPBACK_SPARK_ENV, "SPARK_HOME": str(SPARK_HOME), "PYSPARK_PYTHON": sys.executable}

    def start(self) -> SparkStandalone:
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> None:
        spark_class = str(SPARK_HOME / "bin" / "spark-class")
        self.port = free_port()
        self.webui_port = free_port()
        self.master_log = self.work_dir / "spark_master.log"
        self.worker_log = self.work_dir / "spark_worker.log"
        executors_dir = self.work_dir / "spark_worker"
        executors_dir.mkdir()

        master = [
            spark_class, "org.apache.spark.deploy.master.Master",
            "--host", "127.0.0.1", "--port", str(self.port), "--webui-port", str(self.webui_port),
        ]
        worker = [
            spark_class, "org.apache.spark.deploy.worker.Worker", self.url,
            "--host", "127.0.0.1", "--port", str(free_port()), "--webui-port", str(free_port()),
            "--cores", str(self.cores), "--memory", self.memory, "--work-dir", str(executors_dir),
        ]
        self.processes.append(start_session(master, self.env(), self.master_log))
        # The worker retries registering until the master is up, so both JVMs start at once.
        self.processes.append(start_session(worker, self.env(), self.worker_log))

    def wait_ready(self) -> None:
        wait_until(self.has_alive_worker, START_TIMEOUT_SECONDS, lambda: f"no worker registered with {self.url}\n{self.logs()}")

    def state(self) -> dict | None:
        """Return the master's JSON status, or None while its web UI does not respond."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.webui_port}/json/", timeout=5) as response:
                return json.load(response)
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def has_alive_worker(self) -> bool:
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[1]} exited with code {process.returncode}\n{self.logs()}")
        state = self.state()
        return state is not None and state.get("aliveworkers", 0) >= 1

    def completed_apps(self) -> list[dict]:
        state = self.state() or {}
        return state.get("completedapps", [])

    def logs(self) -> str:
        executor_logs = sorted((self.work_dir / "spark_worker").glob("*/*/stderr"))
        return "\n".join([tail(self.master_log), tail(self.worker_log), *[tail(path, 20) for path in executor_logs]])

    def stop(self) -> None:
        # The worker goes first so that it kills its executors rather than waiting for the master.
        for process in reversed(self.processes):
            stop_session(process)
