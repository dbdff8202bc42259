"""Run the real assets in-process against a stand-in, with resources pointed at a test folder."""

from pathlib import Path

from dagster import materialize

from etl_assets.assets.raw import raw_assets
from etl_assets.assets.spark import spark_assets
from etl_assets.definitions import build_resources
from etl_assets.resources.api import MoovitamixApi
from etl_assets.resources.spark import SparkResource
from etl_assets.resources.storage import SnapshotStorage

PARTITION = "2026-12-04"


def run_pipeline(base_url: str, data_dir: Path, *, partition: str = PARTITION, assets=None, run_config=None, raise_on_error=True, **api_settings):
    """Materialise `assets` (all by default) for one partition and return the ExecuteInProcessResult."""
    resources = build_resources(
        api=MoovitamixApi(base_url=base_url, **api_settings),
        storage=SnapshotStorage(base_dir=str(data_dir)),
        spark=SparkResource(cores=2, driver_memory="2g"),
    )
    return materialize(
        assets or [*raw_assets, *spark_assets],
        partition_key=partition,
        resources=resources,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def materialization_metadata(result, asset_name: str) -> dict:
    """Return the metadata values of the one materialisation of `asset_name` in a result."""
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key.to_user_string() == asset_name:
            return {key: value.value for key, value in materialization.metadata.items()}
    raise KeyError(f"{asset_name} was not materialised in this run")
