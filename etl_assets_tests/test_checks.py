"""Asset checks on real runs: they pass on clean data, fail where the data is wrong, and block the join."""

from dagster import materialize

from etl_assets.assets.raw import raw_assets
from etl_assets.assets.spark import spark_assets
from etl_assets.checks import asset_checks, ids_result, table_counts
from etl_assets.definitions import build_resources
from etl_assets.resources.api import MoovitamixApi
from etl_assets.resources.spark import SparkResource
from etl_assets.resources.storage import SnapshotStorage
from etl_assets.stand_in_api.server import serve_in_thread
from etl_assets.stand_in_api.settings import StandInSettings
from etl_assets_tests.pipeline import PARTITION

PREVIOUS_DAY = "2026-12-03"
RAW_ONLY_CHECKS = [check for check in asset_checks if all(key.asset_key.path[-1].startswith("raw_") for key in check.check_keys)]


def run_with_checks(base_url, data_dir, *, partition=PARTITION, assets=None, checks=None, run_config=None):
    resources = build_resources(
        api=MoovitamixApi(base_url=base_url, backoff_seconds=0.05),
        storage=SnapshotStorage(base_dir=str(data_dir)),
        spark=SparkResource(cores=2, driver_memory="2g"),
    )
    return materialize(
        [*(assets or [*raw_assets, *spark_assets]), *(checks if checks is not None else asset_checks)],
        partition_key=partition,
        resources=resources,
        run_config=run_config,
        raise_on_error=False,
    )


def check_results(result) -> dict[str, object]:
    return {evaluation.asset_check_key.to_user_string(): evaluation for evaluation in result.get_asset_check_evaluations()}


def test_checks_pass_on_clean_data(small_stand_in, pipeline_env, tmp_path):
    result = run_with_checks(small_stand_in.base_url, tmp_path)

    evaluations = check_results(result)
    assert result.success
    assert len(evaluations) == 13
    assert [name for name, evaluation in evaluations.items() if not evaluation.passed] == []
    assert evaluations["raw_tracks:rows_match_api_total"].metadata["missing_rows"].value == 0
    assert evaluations["listening_activity:one_row_per_non_orphan_event"].metadata["expected_rows"].value == 1500
    assert evaluations["listen_event_orphans:orphan_share_below_threshold"].metadata["orphans"].value == 0


def test_continuity_warns_after_regeneration(pipeline_env, tmp_path):
    settings = StandInSettings(seed=11, tracks=40, users=30, listen_history=20)
    with serve_in_thread(settings) as server:
        run_with_checks(server.base_url, tmp_path, partition=PREVIOUS_DAY, assets=raw_assets, checks=RAW_ONLY_CHECKS)
        same_data = check_results(run_with_checks(server.base_url, tmp_path, assets=raw_assets, checks=RAW_ONLY_CHECKS))

    # A restarted source with another seed serves new random ids.
    with serve_in_thread(StandInSettings(seed=12, tracks=40, users=30, listen_history=20)) as server:
        regenerated = check_results(run_with_checks(server.base_url, tmp_path, assets=raw_assets, checks=RAW_ONLY_CHECKS))

    kept = same_data["raw_tracks:ids_carried_over_from_previous_day"]
    lost = regenerated["raw_tracks:ids_carried_over_from_previous_day"]
    assert kept.passed
    assert kept.metadata["carried_over_share"].value == 1.0
    assert not lost.passed
    assert lost.severity.value == "WARN"
    assert lost.metadata["previous_ids"].value == 40
    assert lost.metadata["carried_over_share"].value < 0.5


def test_orphan_share_blocks_join(pipeline_env, tmp_path):
    # Half the rows are dirty: tracks and users with a wrong id type are rejected, so their events become orphans.
    settings = StandInSettings(seed=5, tracks=60, users=40, listen_history=200).with_faults(dirty_share=0.5)
    ingestion = {"config": {"max_reject_share": 1.0}}
    with serve_in_thread(settings) as server:
        result = run_with_checks(server.base_url, tmp_path, run_config={"ops": {name: ingestion for name in ("raw_tracks", "raw_users", "raw_listen_history")}})

    evaluations = check_results(result)
    orphans = evaluations["listen_event_orphans:orphan_share_below_threshold"]
    assert not orphans.passed
    assert orphans.metadata["orphan_share"].value > 0.05
    materialized = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert "listen_event_orphans" in materialized
    assert "listening_activity" not in materialized


def test_ids_check_counts_duplicates(spark_session):
    frame = spark_session.createDataFrame(
        [(1, None, None), (1, None, None), (2, None, None), (None, None, None)],
        "id long, created_at timestamp, updated_at timestamp",
    )

    result = ids_result("tracks", table_counts(frame, with_ids=True, with_durations=False))

    assert not result.passed
    assert result.metadata["duplicate_ids"].value == 1
    assert result.metadata["null_ids"].value == 1
    assert result.metadata["rows"].value == 4
