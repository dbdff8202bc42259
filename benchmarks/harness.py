"""Shared pieces of the benchmark: machine facts, the stand-in server process, timing and memory sampling."""

import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
STAND_IN_START_SECONDS = 900
PAGE_SIZE_BYTES = os.sysconf("SC_PAGE_SIZE")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def machine_facts() -> dict[str, str]:
    """Return CPU model, cores, RAM, OS, Python and Java versions of this machine."""
    cpu_model = platform.processor() or "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    memory_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    java = subprocess.run(["java", "-version"], capture_output=True, text=True)
    java_line = (java.stderr or java.stdout).splitlines()[0] if (java.stderr or java.stdout) else "not found"
    return {
        "CPU": cpu_model,
        "Cores (os.cpu_count / usable by this process)": f"{os.cpu_count()} / {len(os.sched_getaffinity(0))}",
        "RAM": f"{memory_kib / 2**20:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Java": java_line,
    }


class StandInProcess:
    """The stand-in API served by `etl-stand-in-api` in its own process on a free loopback port."""

    def __init__(self, tracks: int, users: int, listen_history: int, latency_ms: float = 0.0, seed: int = 42):
        self.arguments = [
            "--seed", str(seed),
            "--tracks", str(tracks),
            "--users", str(users),
            "--listen-history", str(listen_history),
            "--latency-ms", str(latency_ms),
            # Access logs at INFO would cost the server CPU on every page.
            "--log-level", "warning",
        ]
        self.folder = Path(tempfile.mkdtemp(prefix="bench-stand-in-"))
        self.process: subprocess.Popen | None = None
        self.base_url = ""

    def __enter__(self) -> "StandInProcess":
        port_file = self.folder / "port"
        log = open(self.folder / "server.log", "w")
        command = [str(VENV_BIN / "etl-stand-in-api"), "--port", "0", "--port-file", str(port_file), *self.arguments]
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STAND_IN_START_SECONDS
        while time.monotonic() < deadline:
            if port_file.exists() and port_file.read_text().strip():
                self.base_url = f"http://127.0.0.1:{port_file.read_text().strip()}"
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"the stand-in exited at start: {(self.folder / 'server.log').read_text()[-500:]}")
            time.sleep(0.2)
        self.process.terminate()
        raise RuntimeError(f"the stand-in did not start within {STAND_IN_START_SECONDS} s; see {self.folder / 'server.log'}")

    def __exit__(self, *exc_info) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)


def parent_map() -> dict[int, int]:
    """Map every visible pid to its parent pid, read from /proc/<pid>/stat."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces, so split after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        parents[int(entry)] = int(fields[1])
    return parents


def descendants(root: int) -> list[int]:
    parents = parent_map()
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        found.append(pid)
        frontier += [child for child, parent in parents.items() if parent == pid]
    return found


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


def peak_rss_bytes(pid: int) -> int:
    """VmHWM of a live process: the maximum resident set size it has reached."""
    try:
        match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return 0
    return int(match.group(1)) * 1024 if match else 0


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class TreeMemory:
    """Memory of a process tree, sampled from /proc every `interval` seconds while it runs."""

    root: int
    driver_marker: str
    interval: float = 0.5
    tree_peak: int = 0
    driver_peak: int = 0
    driver_pid: int | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> "TreeMemory":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = descendants(self.root)
            self.tree_peak = max(self.tree_peak, sum(rss_bytes(pid) for pid in pids))
            if self.driver_pid is None:
                # The root is /usr/bin/time, whose command line also contains the marker.
                matches = [pid for pid in pids if pid != self.root and self.driver_marker in command_line(pid)]
                # The first match is the outermost process with the marker, not a child that inherited its name.
                self.driver_pid = min(matches) if matches else None
            if self.driver_pid is not None:
                self.driver_peak = max(self.driver_peak, peak_rss_bytes(self.driver_pid))
            self._stop.wait(self.interval)


@dataclass
class TimedRun:
    command: list[str]
    seconds: float
    max_rss_bytes: int
    tree_peak_bytes: int
    driver_peak_bytes: int
    returncode: int
    log_path: Path


def run_with_time(command: list[str], env: dict[str, str], driver_marker: str, log_path: Path) -> TimedRun:
    """Run a command under `/usr/bin/time -v`, sampling the tree's summed RSS and the driver's VmHWM."""
    time_file = log_path.with_suffix(".time")
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            ["/usr/bin/time", "-v", "-o", str(time_file), *command], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        memory = TreeMemory(process.pid, driver_marker).start()
        returncode = process.wait()
        memory.stop()

    report = time_file.read_text()
    max_rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", report).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", report).group(1)
    seconds = 0.0
    for part in wall.split(":"):
        seconds = seconds * 60 + float(part)
    return TimedRun(command, seconds, max_rss_kib * 1024, memory.tree_peak, memory.driver_peak, returncode, log_path)


def shell_command(command: list[str], env_changes: dict[str, str] | None = None) -> str:
    prefix = " ".join(f"{name}={shlex.quote(value)}" for name, value in (env_changes or {}).items())
    return (prefix + " " if prefix else "") + shlex.join(command)


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"
