"""Snapshot storage: every asset partition is one folder of CSV parts at `<base_dir>/<asset>/<YYYY-MM-DD>/`."""

import os
import uuid

from dagster import ConfigurableResource
from pydantic import Field
from upath import UPath


def default_data_dir() -> str:
    return os.environ.get("ETL_DATA_DIR") or os.path.join(os.getcwd(), "data")


class SnapshotStorage(ConfigurableResource):
    """The folder or fsspec URL that contains every snapshot, with the staging areas beside them."""

    base_dir: str = Field(
        default_factory=default_data_dir,
        description="Folder or fsspec URL (s3://…, gs://…) holding every asset partition. "
        "Defaults to $ETL_DATA_DIR, else data/ in the working directory.",
    )
    lock_timeout_seconds: float = Field(
        default=600.0,
        description="Seconds a run waits for another run writing the same partition before it fails.",
    )

    @property
    def root(self) -> UPath:
        return UPath(self.base_dir)

    def partition_path(self, asset: str, partition: str) -> UPath:
        return self.root / asset / partition

    def staging_path(self, asset: str, partition: str) -> UPath:
        """Pages fetched for a partition that is not committed yet; kept across step retries."""
        return self.root / asset / ".staging" / partition

    def temporary_path(self, asset: str, partition: str) -> UPath:
        return self.root / asset / f".tmp-{partition}-{uuid.uuid4().hex[:12]}"

    def check_writable(self) -> None:
        """Fail with the path and the fix when the base folder cannot be written."""
        probe = self.root / f".write-probe-{uuid.uuid4().hex[:8]}"
        if self.root.exists() and not self.root.is_dir():
            raise PermissionError(f"ETL_DATA_DIR {self.base_dir} is not writable: it is a file, not a folder; set ETL_DATA_DIR to a folder")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            raise PermissionError(
                f"ETL_DATA_DIR {self.base_dir} is not writable ({error.strerror or error}); "
                "set ETL_DATA_DIR to a folder this user can write"
            ) from None
