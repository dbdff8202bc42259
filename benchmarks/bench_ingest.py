"""Ingestion: the product's Ray fan-out against a sequential loop and an asyncio "ideal client"."""

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from upath import UPath

from etl_assets.contract import RAW_TABLES
from etl_assets.resources.api_client import MAX_PAGE_SIZE, ApiClientSettings

log = logging.getLogger("bench.ingest")


@dataclass
class EndpointTiming:
    rows: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("nan")


@dataclass
class IngestRun:
    """One pass over the three endpoints: fetch timings and, for the product, the IO manager's merge."""

    fetch: dict[str, EndpointTiming] = field(default_factory=dict)
    merge_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(timing.rows for timing in self.fetch.values())

    @property
    def seconds(self) -> float:
        return sum(timing.seconds for timing in self.fetch.values())


def raw_table_names() -> list[str]:
    return list(RAW_TABLES)


def run_product(base_url: str, data_dir: Path, partition: str, tasks: int, threads: int) -> IngestRun:
    """Fetch every endpoint with `ingest_endpoint`, then commit it with the raw CSV IO manager."""
    from dagster import AssetKey, build_output_context

    from etl_assets.assets.ingest import ingest_endpoint
    from etl_assets.io_managers.csv_io_manager import RawCsvIOManager

    settings = ApiClientSettings(base_url=base_url)
    io_manager = RawCsvIOManager(base_path=UPath(data_dir))
    run = IngestRun()
    for name, table in RAW_TABLES.items():
        staging = UPath(data_dir) / name / ".staging" / partition
        shutil.rmtree(staging.path, ignore_errors=True)

        started = time.perf_counter()
        snapshot = ingest_endpoint(settings, table, staging, tasks=tasks, threads=threads, max_passes=1, log=log)
        run.fetch[name] = EndpointTiming(snapshot.rows, time.perf_counter() - started)

        # The same call Dagster makes when the asset returns: merge pages, de-duplicate, commit the folder.
        context = build_output_context(asset_key=AssetKey(name), partition_key=partition)
        started = time.perf_counter()
        io_manager.dump_to_path(context, snapshot, UPath(data_dir) / name / partition)
        run.merge_seconds[name] = time.perf_counter() - started
    return run


def run_sequential(base_url: str) -> IngestRun:
    """Fetch every page of every endpoint one after another with one requests.Session."""
    run = IngestRun()
    with requests.Session() as session:
        for name, table in RAW_TABLES.items():
            url = f"{base_url}/{table.endpoint}"
            started = time.perf_counter()
            page, pages, rows = 1, 1, 0
            while page <= pages:
                response = session.get(url, params={"page": page, "size": MAX_PAGE_SIZE}, timeout=30)
                response.raise_for_status()
                body = response.json()
                rows += len(body["items"])
                pages = body["pages"]
                page += 1
            run.fetch[name] = EndpointTiming(rows, time.perf_counter() - started)
    return run


async def fetch_endpoint_async(client, url: str, concurrency: int) -> int:
    first = (await client.get(url, params={"page": 1, "size": MAX_PAGE_SIZE})).raise_for_status().json()
    semaphore = asyncio.Semaphore(concurrency)

    async def fetch(page: int) -> int:
        async with semaphore:
            response = await client.get(url, params={"page": page, "size": MAX_PAGE_SIZE})
            return len(response.raise_for_status().json()["items"])

    counts = await asyncio.gather(*(fetch(page) for page in range(2, first["pages"] + 1)))
    return len(first["items"]) + sum(counts)


async def run_ideal_async(base_url: str, concurrency: int) -> IngestRun:
    import httpx

    run = IngestRun()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        for name, table in RAW_TABLES.items():
            started = time.perf_counter()
            rows = await fetch_endpoint_async(client, f"{base_url}/{table.endpoint}", concurrency)
            run.fetch[name] = EndpointTiming(rows, time.perf_counter() - started)
    return run


def run_ideal(base_url: str, concurrency: int) -> IngestRun:
    """Fetch and count every row with asyncio and httpx at `concurrency` requests in flight."""
    return asyncio.run(run_ideal_async(base_url, concurrency))


def start_ray() -> tuple[int, float]:
    """Start a local Ray the way the RayCluster resource does; return its CPUs and the start time."""
    import ray

    from etl_assets.resources.cpu import usable_cpu_count

    started = time.perf_counter()
    ray.init(num_cpus=usable_cpu_count(), include_dashboard=False, logging_level="WARNING")
    return int(ray.cluster_resources().get("CPU", 1)), time.perf_counter() - started


def default_threads_per_task() -> int:
    from etl_assets.assets.raw import IngestionConfig

    return IngestionConfig.model_fields["threads_per_task"].default
