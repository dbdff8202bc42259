"""The CSV IO manager of the raw snapshots: commits fetched pages as one partition folder.

Each partition is `<base>/<asset>/<YYYY-MM-DD>/` holding `part-00000.csv` (the
rows, de-duplicated on the table's natural key), `_rejects.csv` (rows that
broke the API contract, with the reason) and `_manifest.json`. Files starting
with `_` are skipped by Spark's readers.
"""

import hashlib
import json
import os
from typing import Any

from dagster import (
    ConfigurableIOManagerFactory,
    InputContext,
    MetadataValue,
    OutputContext,
    ResourceDependency,
    TableColumn,
    TableSchema,
    UPathIOManager,
)
from upath import UPath

from etl_assets.contract import RAW_TABLES, RawTable
from etl_assets.io_managers.atomic import commit_folder, temporary_sibling
from etl_assets.io_managers.csv_dialect import format_field, read_rows, write_header, write_rows
from etl_assets.io_managers.staging import StagedSnapshot, clear_pages, page_csv
from etl_assets.resources.storage import SnapshotStorage

PART_NAME = "part-00000.csv"
REJECTS_NAME = "_rejects.csv"
MANIFEST_NAME = "_manifest.json"
REJECT_COLUMNS = ["page", "reason", "record"]


def record_key(table: RawTable, row: dict[str, Any]) -> Any:
    """Return the natural key of a row: its id, or a digest of the whole record."""
    if table.key is not None:
        return row[table.key]
    text = "\x1f".join(format_field(row.get(column)) for column in table.columns)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def preview_markdown(columns: list[str], rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [str(row.get(column)).replace("|", "\\|").replace("\n", " ") for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


class RawCsvIOManager(UPathIOManager):
    extension = ""

    def dump_to_path(self, context: OutputContext, obj: Any, path: UPath) -> None:
        if not isinstance(obj, StagedSnapshot):
            raise TypeError(
                f"the raw CSV IO manager stores StagedSnapshot outputs, not {type(obj).__name__}; "
                f"asset {context.asset_key.to_user_string()} must return the snapshot of its fetched pages"
            )
        try:
            self._commit(context, obj, path)
        finally:
            if obj.lock is not None:
                obj.lock.release()

    def _commit(self, context: OutputContext, snapshot: StagedSnapshot, path: UPath) -> None:
        ingestion, table = snapshot, snapshot.table
        staging = UPath(ingestion.staging_uri)
        folder = temporary_sibling(path)
        folder.mkdir(parents=True, exist_ok=True)

        # Pages are merged in page order; a row seen on an earlier page wins.
        seen: set[Any] = set()
        preview: list[dict[str, Any]] = []
        written = duplicates = 0
        with (folder / PART_NAME).open("w", encoding="utf-8", newline="") as stream:
            write_header(stream, table.columns)
            for page in sorted(ingestion.manifests):
                fresh = []
                with page_csv(staging, page).open("rb") as source:
                    rows = read_rows(source, table.fields)
                for row in rows:
                    key = record_key(table, row)
                    if key in seen:
                        duplicates += 1
                        continue
                    seen.add(key)
                    fresh.append(row)
                written += write_rows(stream, table.columns, fresh)
                preview += fresh[: max(0, 5 - len(preview))]

        rejects = [reject for page in sorted(ingestion.manifests) for reject in ingestion.manifests[page].rejects]
        with (folder / REJECTS_NAME).open("w", encoding="utf-8", newline="") as stream:
            write_header(stream, REJECT_COLUMNS)
            write_rows(stream, REJECT_COLUMNS, rejects)

        summary = {
            "endpoint": table.endpoint,
            "api_total": ingestion.total,
            "pages": ingestion.pages,
            "passes": ingestion.passes,
            "rows": written,
            "duplicates_dropped": duplicates,
            "rejected_rows": len(rejects),
            "page_attempts": {str(page): manifest.attempts for page, manifest in sorted(ingestion.manifests.items())},
        }
        (folder / MANIFEST_NAME).write_text(json.dumps(summary, indent=2))

        commit_folder(folder, path)
        clear_pages(staging)

        context.add_output_metadata(
            {
                "row_count": MetadataValue.int(written),
                "api_total": MetadataValue.int(ingestion.total),
                "duplicates_dropped": MetadataValue.int(duplicates),
                "rejected_rows": MetadataValue.int(len(rejects)),
                "rejects_path": MetadataValue.path(str(path / REJECTS_NAME)),
                "pages": MetadataValue.int(ingestion.pages),
                "passes": MetadataValue.int(ingestion.passes),
                "pages_reused": MetadataValue.int(ingestion.reused_pages),
                "retries": MetadataValue.int(len(ingestion.retries)),
                "dagster/column_schema": TableSchema(
                    columns=[TableColumn(name, "array<bigint> as JSON" if kind is list else kind.__name__) for name, kind in table.fields.items()]
                ),
                "preview": MetadataValue.md(preview_markdown(table.columns, preview)),
            }
        )

    def load_from_path(self, context: InputContext, path: UPath) -> list[dict[str, Any]]:
        """Load a raw partition as dicts, values typed as the API sent them."""
        table = RAW_TABLES[context.asset_key.path[-1]]
        part = path / PART_NAME
        if not part.exists():
            raise FileNotFoundError(f"raw snapshot {part} not found; materialize {context.asset_key.to_user_string()} for this partition first")
        return read_rows(os.fspath(part.path), table.fields)


class RawCsvIOManagerFactory(ConfigurableIOManagerFactory):
    """Stores raw snapshots as CSV partition folders under the shared snapshot storage."""

    storage: ResourceDependency[SnapshotStorage]

    def create_io_manager(self, context) -> RawCsvIOManager:
        return RawCsvIOManager(base_path=self.storage.root)
