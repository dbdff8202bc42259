"""The Spark CSV IO manager: reads any partition with its explicit schema, writes Spark outputs whole.

Outputs are written by Spark into a temporary folder beside the partition and
swapped in only when the write has finished, under the partition's lock.
"""

import os
from dataclasses import dataclass, field
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

from etl_assets.io_managers.atomic import PartitionLock, commit_folder, is_local, temporary_sibling
from etl_assets.io_managers.csv_dialect import SPARK_READ_OPTIONS, SPARK_WRITE_OPTIONS
from etl_assets.io_managers.csv_io_manager import preview_markdown
from etl_assets.resources.spark import SparkResource
from etl_assets.resources.storage import SnapshotStorage

PREVIEW_ROWS = 5
# An observed metric: rows that passed the cleaning rules, before one version per id is kept.
KEPT_ROWS = "rows_kept_by_rules"


@dataclass
class SparkOutput:
    """A DataFrame to store, with Spark Observations whose values become metadata once it is written."""

    frame: Any
    observations: list[Any] = field(default_factory=list)
    # True when the frame keeps one row per id, so kept rows minus written rows were older versions.
    deduplicated: bool = False


def spark_path(path: UPath) -> str:
    return os.fspath(path.path) if is_local(path) else str(path)


class SparkCsvIOManager(UPathIOManager):
    extension = ""

    def __init__(self, base_path: UPath, spark: SparkResource, storage: SnapshotStorage):
        super().__init__(base_path=base_path)
        self.spark = spark
        self.storage = storage

    def dump_to_path(self, context: OutputContext, obj: Any, path: UPath) -> None:
        from pyspark.sql import DataFrame, Observation
        from pyspark.sql import functions as F

        output = obj if isinstance(obj, SparkOutput) else SparkOutput(obj)
        if not isinstance(output.frame, DataFrame):
            raise TypeError(
                f"the Spark CSV IO manager stores pyspark DataFrames, not {type(output.frame).__name__}; "
                f"return a DataFrame from {context.asset_key.to_user_string()}"
            )

        # The row count is observed during the write itself instead of by a second job.
        written = Observation("written")
        frame = output.frame.observe(written, F.count(F.lit(1)).alias("row_count"))
        with PartitionLock(path, self.storage.lock_timeout_seconds):
            folder = temporary_sibling(path)
            frame.write.options(**SPARK_WRITE_OPTIONS).csv(spark_path(folder))
            commit_folder(folder, path)

        metadata: dict[str, Any] = {"row_count": MetadataValue.int(int(written.get["row_count"]))}
        for observation in output.observations:
            for name, value in observation.get.items():
                metadata[name] = MetadataValue.int(int(value or 0))
                if name == KEPT_ROWS and output.deduplicated:
                    metadata["dropped_older_duplicates"] = MetadataValue.int(int(value or 0) - metadata["row_count"].value)

        schema = output.frame.schema
        preview = self._read(path, schema).limit(PREVIEW_ROWS).collect()
        metadata["dagster/column_schema"] = TableSchema(
            columns=[TableColumn(item.name, item.dataType.simpleString()) for item in schema.fields]
        )
        metadata["preview"] = MetadataValue.md(preview_markdown(schema.fieldNames(), [row.asDict() for row in preview]))
        context.add_output_metadata(metadata)

    def load_from_path(self, context: InputContext, path: UPath) -> Any:
        from etl_assets.schemas import SPARK_SCHEMAS

        name = context.asset_key.path[-1]
        if name not in SPARK_SCHEMAS:
            raise KeyError(f"no explicit schema for asset {name}; add it to etl_assets.schemas.SPARK_SCHEMAS")
        if not path.exists():
            raise FileNotFoundError(f"partition {path} not found; materialize {name} for this partition first")
        return self._read(path, SPARK_SCHEMAS[name])

    def _read(self, path: UPath, schema: Any) -> Any:
        return self.spark.spark_session.read.schema(schema).options(**SPARK_READ_OPTIONS).csv(spark_path(path))


class SparkCsvIOManagerFactory(ConfigurableIOManagerFactory):
    """Reads upstream partitions into Spark with explicit schemas; writes Spark outputs as CSV folders."""

    spark: ResourceDependency[SparkResource]
    storage: ResourceDependency[SnapshotStorage]

    def create_io_manager(self, context) -> SparkCsvIOManager:
        return SparkCsvIOManager(base_path=self.storage.root, spark=self.spark, storage=self.storage)
