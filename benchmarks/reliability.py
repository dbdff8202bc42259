"""Run the raw ingestion against each fault of the stand-in API and write docs/reliability.md.

    .venv/bin/python benchmarks/reliability.py

Every case serves a fresh stand-in on 127.0.0.1, materialises the three raw
assets in-process on a local Ray, and compares each landed partition with the
server's true table: rows lost and rows doubled must both be 0.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from etl_assets.assets.raw import raw_assets  # noqa: E402
from etl_assets.contract import RAW_TABLES  # noqa: E402
from etl_assets.io_managers.csv_dialect import read_rows  # noqa: E402
from etl_assets.stand_in_api.server import serve_in_thread  # noqa: E402
from etl_assets.stand_in_api.settings import StandInSettings  # noqa: E402
from etl_assets_tests.pipeline import PARTITION, materialization_metadata, run_pipeline  # noqa: E402

ROWS = 1000
BASE = StandInSettings(seed=5, tracks=ROWS, users=ROWS, listen_history=ROWS)
COMMAND = ".venv/bin/python benchmarks/reliability.py"
OUTPUT = ROOT / "docs" / "reliability.md"

FAULTS = {
    "none": {},
    "HTTP 5xx on 20% of requests": {"error_share": 0.2},
    "connection reset on 20%": {"reset_share": 0.2},
    "HTTP 429 on 10%, Retry-After 1 s": {"throttle_share": 0.1, "retry_after_s": 1},
    "grow 20 rows while paging": {"change": "grow", "change_rows": 2, "change_max": 20},
    "shrink 20 rows while paging": {"change": "shrink", "change_rows": 2, "change_max": 20},
    "dirty rows 1%": {"dirty_share": 0.01},
    "dirty rows 10%, reject limit 1%": {"dirty_share": 0.1},
    "combined: 20% failing requests, grow, dirty 1%": {
        "error_share": 0.08, "error_statuses": (503,), "throttle_share": 0.06, "retry_after_s": 1,
        "reset_share": 0.06, "change": "grow", "change_rows": 2, "change_max": 20, "dirty_share": 0.01,
    },
}
SETTINGS = {
    "page size 25, 2 Ray tasks x 4 threads": ({"page_size": 25}, {"ray_tasks": 2, "threads_per_task": 4}),
    "page size 100, 1 Ray task x 1 thread": ({"page_size": 100}, {"ray_tasks": 1, "threads_per_task": 1}),
}
# Run config set per fault: this case must fail, because 4-5% of its rows break the contract.
FAULT_INGESTION = {"dirty rows 10%, reject limit 1%": {"max_reject_share": 0.01}}
RETRY_SETTINGS = {"backoff_seconds": 0.05, "max_backoff_seconds": 0.5}


def csv_values(table, row: dict) -> tuple:
    """A row as the raw CSV holds it: lists as compact JSON text."""
    return tuple(
        json.dumps(row.get(column), separators=(",", ":")) if isinstance(row.get(column), list) else row.get(column)
        for column in table.columns
    )


def breaks_contract(table, row: dict) -> bool:
    """The stand-in's rejected defects: a missing field or an id sent as a string."""
    return any(column not in row for column in table.columns) or any(isinstance(row.get(name), str) for name in ("id", "user_id"))


def compare(server, data_dir: Path, asset: str) -> dict:
    """Count truth rows, expected rejects, and rows lost or doubled in the landed partition."""
    table = RAW_TABLES[asset]
    truth = server.app.state.store.snapshot(table.endpoint)
    expected = Counter(csv_values(table, row) for row in truth if not breaks_contract(table, row))
    part = data_dir / asset / PARTITION / "part-00000.csv"
    landed = Counter(csv_values(table, row) for row in read_rows(str(part), table.fields)) if part.exists() else Counter()
    return {
        "truth": len(truth),
        "expected_rejects": len(truth) - sum(expected.values()),
        "landed": sum(landed.values()),
        "lost": sum((expected - landed).values()),
        "doubled": sum((landed - expected).values()),
    }


def run_case(fault: dict, api_settings: dict, ingestion: dict) -> list[dict]:
    assets = [asset.key.to_user_string() for asset in raw_assets]
    run_config = {"ops": {name: {"config": ingestion} for name in assets}}
    with serve_in_thread(BASE.with_faults(**fault)) as server, tempfile.TemporaryDirectory() as folder:
        started = time.monotonic()
        result = run_pipeline(
            server.base_url, Path(folder), assets=raw_assets, run_config=run_config, raise_on_error=False,
            **api_settings, **RETRY_SETTINGS,
        )
        seconds = time.monotonic() - started

        failures = {
            event.step_key: event.event_specific_data.error for event in result.get_step_failure_events()
        }
        rows = []
        for asset in assets:
            counts = compare(server, Path(folder), asset)
            if asset in failures:
                error = failures[asset].cause or failures[asset]
                outcome = "failed: " + error.message.strip().split(": ", 1)[-1].replace("|", "\\|")
                metadata = {}
            else:
                outcome = "success"
                metadata = materialization_metadata(result, asset)
            rows.append({"asset": asset, "outcome": outcome, "seconds": seconds, **counts, **metadata})
    return rows


def machine() -> list[str]:
    with open("/proc/meminfo") as meminfo:
        total_kib = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    return [
        f"- CPUs usable: {len(os.sched_getaffinity(0))} (`nproc`), memory {total_kib / 1024 / 1024:.1f} GiB",
        f"- Python {platform.python_version()} on {platform.platform()}",
        f"- Java: {java[0] if java else 'not found'}",
    ]


def render(results: list[tuple[str, str, dict]]) -> str:
    lines = [
        "# Reliability of the raw ingestion under API faults",
        "",
        f"Generated by `{COMMAND}`; rerun it to refresh this page.",
        "",
        *machine(),
        "",
        f"Each case serves a fresh stand-in API (seed {BASE.seed}, {ROWS} rows per endpoint) on 127.0.0.1 and",
        "materialises `raw_tracks`, `raw_users` and `raw_listen_history` in one process on a local Ray",
        f"(backoff {RETRY_SETTINGS['backoff_seconds']} s, at most {RETRY_SETTINGS['max_backoff_seconds']} s, 6 attempts per page).",
        "*Truth* is the server's table at the end of the run. *Rejects* are the rows that break the API",
        "contract (a missing field or an id sent as a string). *Lost* counts truth rows, rejects",
        "excluded, missing from the landed partition; *doubled* counts landed rows beyond their count in",
        "truth. A failed asset commits nothing, so its lost rows are not counted.",
        "",
        "| fault | setting | asset | outcome | landed | truth | rejects | lost | doubled | retries | passes | run s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fault, setting, row in results:
        failed = row["outcome"] != "success"
        lines.append(
            f"| {fault} | {setting} | {row['asset']} | {row['outcome']} | {row['landed']} | {row['truth']} | "
            f"{row.get('rejected_rows', row['expected_rejects'])} | {'-' if failed else row['lost']} | "
            f"{'-' if failed else row['doubled']} | {row.get('retries', '-')} | {row.get('passes', '-')} | {row['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    results = []
    try:
        for fault_name, fault in FAULTS.items():
            for setting_name, (api_settings, ingestion) in SETTINGS.items():
                print(f"running {fault_name} / {setting_name}", file=sys.stderr, flush=True)
                config = {**ingestion, **FAULT_INGESTION.get(fault_name, {})}
                for row in run_case(fault, api_settings, config):
                    results.append((fault_name, setting_name, row))
    finally:
        ray.shutdown()

    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render(results))
    lost = sum(row["lost"] + row["doubled"] for _, _, row in results if row["outcome"] == "success")
    print(f"wrote {OUTPUT}; rows lost or doubled in successful assets: {lost}", file=sys.stderr)
    if lost:
        sys.exit(1)


if __name__ == "__main__":
    main()
