"""Raw snapshots of the three API endpoints, fetched page by page by Ray tasks."""

from dagster import AssetExecutionContext, AssetsDefinition, Config, Failure, MetadataValue, asset
from dagster_ray import RayResource
from pydantic import Field

from etl_assets.assets.ingest import ingest_endpoint
from etl_assets.contract import RAW_TABLES, RawTable
from etl_assets.io_managers.atomic import PartitionLock
from etl_assets.io_managers.staging import StagedSnapshot
from etl_assets.partitions import daily_partitions
from etl_assets.resources.api import MoovitamixApi
from etl_assets.resources.storage import SnapshotStorage

# Retries beyond this many are summarised in one line instead of logged each.
LOGGED_RETRIES = 20

DESCRIPTIONS = {
    "raw_tracks": "One row per track served by GET /tracks, values exactly as the API sent them. "
    "A daily snapshot of the whole table.",
    "raw_users": "One row per user served by GET /users, values exactly as the API sent them. "
    "A daily snapshot of the whole table.",
    "raw_listen_history": "One row per listening-history record served by GET /listen_history: a user's batch "
    "of listened track ids, `items` kept as JSON text. A daily snapshot of the whole table.",
}


class IngestionConfig(Config):
    ray_tasks: int | None = Field(
        default=None, description="Ray tasks sharing the pages. Defaults to the CPUs of the Ray cluster."
    )
    threads_per_task: int = Field(
        default=16, ge=1, description="Concurrent requests inside each Ray task; fetching waits on the network, not the CPU."
    )
    max_in_flight_requests: int = Field(
        default=64, ge=1, description="Page requests in flight at once across every Ray task of the run."
    )
    max_requests_per_second: float = Field(
        default=500.0, gt=0, description="New page requests per second across every Ray task; halved on each HTTP 429."
    )
    max_passes: int = Field(
        default=5, ge=1, description="Passes over the pages before failing when the table's total keeps changing."
    )
    max_reject_share: float = Field(
        default=0.05, ge=0, le=1, description="Share of rows breaking the API contract above which the asset fails."
    )


def log_retries(context: AssetExecutionContext, retries: list[str]) -> None:
    for message in retries[:LOGGED_RETRIES]:
        context.log.warning(message)
    if len(retries) > LOGGED_RETRIES:
        context.log.warning(f"{len(retries) - LOGGED_RETRIES} more retries not shown; see the retries metadata count")


def check_reject_share(name: str, snapshot: StagedSnapshot, max_share: float) -> None:
    served = snapshot.rows + snapshot.rejects
    share = snapshot.rejects / served if served else 0.0
    if share > max_share:
        raise Failure(
            description=f"{name}: {snapshot.rejects} of {served} rows ({share:.1%}) break the API contract, above the "
            f"{max_share:.1%} threshold; the fetched pages and their rejects stay in {snapshot.staging_uri} for inspection",
            metadata={"rejected_rows": MetadataValue.int(snapshot.rejects), "reject_share": MetadataValue.float(share)},
        )


# The run ID and handle of the current run's request budget actor. Ray (2.60 here)
# destroys a non-detached actor once the handles of its creator are gone, even
# while a handle found by name with `get_if_exists` is in use, so the creating
# handle stays here until the next run replaces it. The in-process executor runs
# every raw asset of a run in this process.
_run_budget: tuple[str, object] | None = None


def shared_budget(run_id: str, config: IngestionConfig):
    """Return the run's request budget actor, created by the first raw asset of the run.

    One actor per run is shared by the raw assets, so the API gets one budget
    and the run pays the start of one actor process, not one per asset.
    NOTE: the limits of the first raw asset to run apply to the whole run.
    """
    global _run_budget
    from etl_assets.resources.rate_limit import RequestBudget

    if _run_budget is None or _run_budget[0] != run_id:
        options = RequestBudget.options(name=f"etl-request-budget-{run_id}", get_if_exists=True)
        _run_budget = (run_id, options.remote(config.max_in_flight_requests, config.max_requests_per_second))
    return _run_budget[1]


def build_raw_asset(name: str, table: RawTable) -> AssetsDefinition:
    @asset(
        name=name,
        description=DESCRIPTIONS[name],
        partitions_def=daily_partitions,
        io_manager_key="raw_csv_io_manager",
        group_name="raw",
        kinds={"ray", "csv"},
    )
    def raw_asset(
        context: AssetExecutionContext,
        config: IngestionConfig,
        api: MoovitamixApi,
        ray_cluster: RayResource,
        storage: SnapshotStorage,
    ) -> StagedSnapshot:
        import ray

        partition = context.partition_key
        storage.check_writable()
        tasks = config.ray_tasks or max(1, int(ray.cluster_resources().get("CPU", 1)))

        # Held until the IO manager has committed the partition, so two runs of
        # the same partition neither mix their pages nor their files.
        lock = PartitionLock(storage.partition_path(name, partition), storage.lock_timeout_seconds).acquire()
        try:
            context.log.info(f"Fetching /{table.endpoint} for {partition} with {tasks} Ray tasks x {config.threads_per_task} threads")
            snapshot = ingest_endpoint(
                api.client_settings(),
                table,
                storage.staging_path(name, partition),
                tasks=tasks,
                threads=config.threads_per_task,
                max_passes=config.max_passes,
                log=context.log,
                budget=shared_budget(context.run_id, config),
            )
            log_retries(context, snapshot.retries)
            check_reject_share(name, snapshot, config.max_reject_share)
        except BaseException:
            lock.release()
            raise

        context.log.info(
            f"Fetched {snapshot.rows} rows of /{table.endpoint} ({snapshot.rejects} rejected) in {snapshot.pages} pages, "
            f"{snapshot.passes} pass(es), {len(snapshot.retries)} retries"
        )
        snapshot.lock = lock
        return snapshot

    return raw_asset


raw_assets = [build_raw_asset(name, table) for name, table in RAW_TABLES.items()]
