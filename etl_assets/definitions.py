"""The code location: every asset, check, job, schedule, sensor and resource, wired together."""

import os

from dagster import Definitions, in_process_executor

from etl_assets.assets.raw import raw_assets
from etl_assets.assets.spark import spark_assets
from etl_assets.automation import daily_snapshot_job, daily_snapshot_schedule, raw_sensors, spark_refresh_job
from etl_assets.checks import asset_checks
from etl_assets.io_managers.csv_io_manager import RawCsvIOManagerFactory
from etl_assets.io_managers.spark_csv_io_manager import SparkCsvIOManagerFactory
from etl_assets.resources.api import MoovitamixApi
from etl_assets.resources.ray import RayCluster
from etl_assets.resources.spark import SparkResource
from etl_assets.resources.storage import SnapshotStorage


def build_resources(**overrides):
    """Return the run's resources, configured from the environment; tests pass overrides."""
    storage = overrides.pop("storage", None) or SnapshotStorage()
    spark = overrides.pop("spark", None) or SparkResource(master=os.environ.get("ETL_SPARK_MASTER") or None)
    resources = {
        "api": MoovitamixApi(),
        "ray_cluster": RayCluster(address=os.environ.get("ETL_RAY_ADDRESS") or None),
        "spark": spark,
        "storage": storage,
        "raw_csv_io_manager": RawCsvIOManagerFactory(storage=storage),
        "spark_csv_io_manager": SparkCsvIOManagerFactory(spark=spark, storage=storage),
    }
    resources.update(overrides)
    return resources


defs = Definitions(
    assets=[*raw_assets, *spark_assets],
    asset_checks=asset_checks,
    jobs=[daily_snapshot_job, spark_refresh_job],
    schedules=[daily_snapshot_schedule],
    sensors=raw_sensors,
    resources=build_resources(),
    # One process per run, so Spark and Ray start once per run instead of once per step.
    executor=in_process_executor,
)
