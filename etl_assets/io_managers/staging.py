"""The staging area of a raw snapshot being fetched: one CSV and one manifest per API page.

A page's CSV is written first and its manifest last. A page counts as stored
only when its manifest parses and its CSV matches the manifest's checksum, so
a write cut short at any point leaves a page that is fetched again. A retried
step re-fetches only those pages.
"""

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from upath import UPath

from etl_assets.contract import RawTable, contract_violation
from etl_assets.io_managers.atomic import PartitionLock, is_local
from etl_assets.io_managers.csv_dialect import write_header, write_rows
from etl_assets.resources.api_client import PageResult


@dataclass
class PageManifest:
    page: int
    rows: int
    total: int
    pages: int
    attempts: int
    sha256: str
    rejects: list[dict[str, Any]] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)


def page_name(page: int) -> str:
    return f"page-{page:06d}"


def write_file(path: UPath, data: bytes) -> None:
    # Plain file calls on a local disk: going through fsspec for every page costs more than the write.
    if is_local(path):
        with open(os.fspath(path.path), "wb") as stream:
            stream.write(data)
    else:
        path.write_bytes(data)


def store_page(staging: UPath, table: RawTable, result: PageResult) -> PageManifest:
    """Write one fetched page's valid rows as a CSV part and its manifest, keeping rejects in the manifest."""
    rows, rejects = [], []
    for row in result.items:
        reason = contract_violation(table, row)
        if reason is None:
            rows.append(row)
        else:
            rejects.append({"page": result.page, "reason": reason, "record": json.dumps(row, ensure_ascii=False)})

    buffer = io.StringIO(newline="")
    write_header(buffer, table.columns)
    write_rows(buffer, table.columns, rows)
    data = buffer.getvalue().encode("utf-8")

    manifest = PageManifest(
        page=result.page,
        rows=len(rows),
        total=result.total,
        pages=result.pages,
        attempts=result.attempts,
        sha256=hashlib.sha256(data).hexdigest(),
        rejects=rejects,
        retries=result.retries,
    )
    # The caller creates the staging folder once, before the pages are fetched.
    write_file(staging / f"{page_name(result.page)}.csv", data)
    write_file(staging / f"{page_name(result.page)}.json", json.dumps(asdict(manifest)).encode("utf-8"))
    return manifest


def read_manifests(staging: UPath) -> dict[int, PageManifest]:
    """Return the manifests of complete pages whose CSV still matches its checksum."""
    if not staging.exists():
        return {}

    manifests = {}
    for path in staging.glob("page-*.json"):
        try:
            manifest = PageManifest(**json.loads(path.read_text()))
            data = (staging / f"{page_name(manifest.page)}.csv").read_bytes()
        except (OSError, ValueError, TypeError):
            continue
        if hashlib.sha256(data).hexdigest() == manifest.sha256:
            manifests[manifest.page] = manifest
    return manifests


def clear_pages(staging: UPath) -> None:
    if staging.exists():
        staging.fs.rm(staging.path, recursive=True)


def page_csv(staging: UPath, page: int) -> UPath:
    return staging / f"{page_name(page)}.csv"


@dataclass
class StagedSnapshot:
    """Every page of one endpoint stored in staging, ready for the raw CSV IO manager to commit."""

    staging_uri: str
    table: RawTable
    total: int
    pages: int
    passes: int
    manifests: dict[int, PageManifest]
    reused_pages: int
    retries: list[str] = field(default_factory=list)
    # Held from the first fetch until the IO manager has committed the partition.
    lock: PartitionLock | None = None

    @property
    def rows(self) -> int:
        return sum(manifest.rows for manifest in self.manifests.values())

    @property
    def rejects(self) -> int:
        return sum(len(manifest.rejects) for manifest in self.manifests.values())
