"""The Ray fan-out that fetches every page of one endpoint into a staging folder.

Page 1 is fetched by the driver to learn `total` and `pages`. The remaining
pages are cut into contiguous blocks, one Ray task per block. Each task fetches
its pages with several threads, because fetching waits on the network, not the
CPU. It writes each page as soon as it arrives, so no process keeps the table.
"""

from concurrent.futures import ThreadPoolExecutor
from upath import UPath

from etl_assets.io_managers.staging import PageManifest, StagedSnapshot, clear_pages, read_manifests, store_page
from etl_assets.contract import RawTable
from etl_assets.resources.api_client import ApiClient, ApiClientSettings, PageFetchError


def split_blocks(pages: list[int], count: int) -> list[list[int]]:
    """Cut a sorted page list into at most `count` contiguous blocks of near-equal length."""
    count = max(1, min(count, len(pages)))
    size, extra = divmod(len(pages), count)
    blocks, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        if end > start:
            blocks.append(pages[start:end])
        start = end
    return blocks


def fetch_block(
    settings: ApiClientSettings, table: RawTable, pages: list[int], staging_uri: str, threads: int, budget=None
) -> list[PageManifest]:
    """Fetch a block of pages and store each one; runs inside a Ray task."""
    from etl_assets.resources.rate_limit import SharedBudgetGate

    client = ApiClient(settings, gate=SharedBudgetGate(budget) if budget is not None else None)
    staging = UPath(staging_uri)

    def fetch_and_store(page: int) -> PageManifest:
        return store_page(staging, table, client.fetch_page(table.endpoint, page))

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(pages)))) as pool:
        return list(pool.map(fetch_and_store, pages))


class TableChangedTooOften(RuntimeError):
    pass


def run_ray_blocks(
    settings: ApiClientSettings, table: RawTable, pages: list[int], staging: UPath, tasks: int, threads: int, budget
) -> list[PageManifest]:
    import ray

    # A task whose worker dies is retried by Ray; a PageFetchError is final, its retries are spent.
    remote = ray.remote(max_retries=2, retry_exceptions=False)(fetch_block)
    futures = [remote.remote(settings, table, block, str(staging), threads, budget) for block in split_blocks(pages, tasks)]
    try:
        return [manifest for block in ray.get(futures) for manifest in block]
    except ray.exceptions.RayTaskError as error:
        for future in futures:
            ray.cancel(future)
        cause = error.as_instanceof_cause()
        if isinstance(cause, PageFetchError):
            raise PageFetchError(str(cause.args[0]) if cause.args else str(cause)) from None
        raise


def ingest_endpoint(
    settings: ApiClientSettings,
    table: RawTable,
    staging: UPath,
    *,
    tasks: int,
    threads: int,
    max_passes: int,
    log,
    budget=None,
) -> StagedSnapshot:
    """Fetch all pages of an endpoint into `staging` until every page of one pass reports the same `total`.

    Pages stored by an earlier attempt with the same `total` are reused. When
    `total` changes while paging, rows have shifted across pages, so the pass is
    discarded and every page is read again; the last pass is the snapshot.
    """
    client = ApiClient(settings)
    retries: list[str] = []
    for attempt in range(1, max_passes + 1):
        first = client.fetch_page(table.endpoint, 1)

        # Pages stored under another total come from a different table state: all go.
        stored = read_manifests(staging)
        manifests = {page: manifest for page, manifest in stored.items() if manifest.total == first.total}
        if len(manifests) != len(stored):
            clear_pages(staging)
            manifests = {}
        reused = len([page for page in manifests if page > 1])
        staging.mkdir(parents=True, exist_ok=True)
        manifests[1] = store_page(staging, table, first)

        missing = [page for page in range(2, first.pages + 1) if page not in manifests]
        log.info(
            f"/{table.endpoint}: total {first.total} rows in {first.pages} pages; fetching {len(missing)} pages "
            f"with Ray ({reused} already stored by an earlier attempt)"
        )
        if missing:
            for manifest in run_ray_blocks(settings, table, missing, staging, tasks, threads, budget):
                manifests[manifest.page] = manifest

        # Page 1's retries are in its manifest; reused pages spent theirs in an earlier run.
        for page in [1, *missing]:
            retries += manifests[page].retries
        totals = sorted({manifest.total for manifest in manifests.values()})
        if totals == [first.total]:
            return StagedSnapshot(str(staging), table, first.total, first.pages, attempt, manifests, reused, retries)

        log.warning(f"/{table.endpoint}: total changed while paging ({', '.join(map(str, totals))}); reading every page again")
        clear_pages(staging)

    raise TableChangedTooOften(
        f"/{table.endpoint} changed its total on each of {max_passes} passes over its pages; "
        "no consistent snapshot could be read. Retry when the source is quieter or raise max_passes"
    )
