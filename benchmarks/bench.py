"""Benchmark the pipeline against baselines measured in the same run and write docs/benchmarks.md.

Usage: .venv/bin/python benchmarks/bench.py [--quick] [--repeats N] [--output PATH]

--quick runs every measurement on small tables once, to check that the script
works; its numbers are not meaningful for performance.
"""

import argparse
import logging
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import bench_ingest
import bench_runs
import bench_transforms
import report
from harness import StandInProcess, load_average, machine_facts

REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("bench")


@dataclass(frozen=True)
class Sizes:
    """Row counts of the stand-in tables; each listening record contains 5 track ids, so events = 5 x records."""

    tracks: int
    users: int
    listen_history: int
    growth_listen_history: int


FULL = Sizes(tracks=50_000, users=100_000, listen_history=200_000, growth_listen_history=1_000_000)
QUICK = Sizes(tracks=1_000, users=1_000, listen_history=2_000, growth_listen_history=10_000)
LATENCY_MS = 50
CONCURRENCIES = [8, 16, 32, 64]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark ingestion, transforms and whole runs; write a Markdown report.")
    parser.add_argument("--quick", action="store_true", help="small tables and one run of each measurement, to check the script")
    parser.add_argument("--repeats", type=int, default=None, help="runs per measurement whose median is reported (default 3, 1 with --quick)")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md", help="Markdown report to write")
    return parser.parse_args()


def measure_ingestion(sizes: Sizes, repeats: int, data_dir: Path, partition: str) -> dict:
    tasks, ray_start = bench_ingest.start_ray()
    threads = bench_ingest.default_threads_per_task()
    results = {"tasks": tasks, "threads": threads, "ray_start_seconds": ray_start, "latency_ms": LATENCY_MS}
    with StandInProcess(sizes.tracks, sizes.users, sizes.listen_history, latency_ms=LATENCY_MS) as server:
        log.info(f"stand-in at {server.base_url}; product ingestion, {tasks} Ray tasks x {threads} threads")
        results["product"] = [bench_ingest.run_product(server.base_url, data_dir, partition, tasks, threads) for _ in range(repeats)]

        log.info("ideal client: concurrency sweep")
        sweep = {concurrency: bench_ingest.run_ideal(server.base_url, concurrency) for concurrency in CONCURRENCIES}
        best = max(sweep, key=lambda concurrency: sweep[concurrency].rows / sweep[concurrency].seconds)
        results["ideal_sweep"] = sweep
        results["ideal_concurrency"] = best
        results["ideal"] = [sweep[best]] + [bench_ingest.run_ideal(server.base_url, best) for _ in range(repeats - 1)]

        # At 50 ms a page the full-size loop takes minutes, so it runs once.
        log.info("sequential loop, once")
        results["sequential"] = [bench_ingest.run_sequential(server.base_url)]

    import ray

    ray.shutdown()
    return results


def measure_transforms(repeats: int, data_dir: Path, partition: str, work_dir: Path) -> dict:
    session, spark_start = bench_transforms.start_spark()
    try:
        spark_seconds = []
        for attempt in range(repeats):
            log.info(f"Spark assets, run {attempt + 1} of {repeats}")
            spark_seconds.append(bench_transforms.run_spark(data_dir, partition))

        duckdb_seconds = []
        for attempt in range(repeats):
            connection, seconds = bench_transforms.run_duckdb(data_dir, partition, work_dir / "duckdb")
            duckdb_seconds.append(seconds)
        comparison = bench_transforms.compare_outputs(connection, data_dir, partition)
    finally:
        session.stop()
    return {"spark_start_seconds": spark_start, "spark": spark_seconds, "duckdb": duckdb_seconds, "comparison": comparison}


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    sizes = QUICK if args.quick else FULL
    repeats = args.repeats or (1 if args.quick else 3)
    partition = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    work_dir = Path(tempfile.mkdtemp(prefix="etl-bench-"))
    data_dir = work_dir / "data"

    results = {
        "command": shlex.join([os.path.relpath(sys.executable, REPO), "benchmarks/bench.py", *sys.argv[1:]]),
        "quick": args.quick,
        "repeats": repeats,
        "sizes": sizes,
        "machine": machine_facts(),
        "load_start": load_average(),
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "work_dir": str(work_dir),
    }
    started = time.monotonic()
    # NOTE: the work folder is kept after the run, with every run's data, logs and /usr/bin/time report.
    log.info(f"work folder {work_dir}")

    phases = [
        ("ingestion", lambda: measure_ingestion(sizes, repeats, data_dir, partition)),
        ("transforms", lambda: measure_transforms(repeats, data_dir, partition, work_dir)),
        ("end_to_end", lambda: bench_runs.measure_end_to_end(sizes, repeats, work_dir)),
        ("growth", lambda: bench_runs.measure_growth(sizes, work_dir, partition)),
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for name, measure in phases:
        results[name] = measure()
        results["total_minutes"] = (time.monotonic() - started) / 60
        report.write_report(results, args.output)
        log.info(f"{name} measured; wrote {args.output}")

    results["load_end"] = load_average()
    report.write_report(results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
