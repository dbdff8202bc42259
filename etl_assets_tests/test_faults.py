"""The raw ingestion against a faulty stand-in API: every row lands exactly once or is rejected.

Each test serves its own stand-in on loopback, runs the real raw assets on the
session's local Ray, and compares the landed partition with the server's true
table. The server's fault decisions are recorded (wrapping its real planner),
so retry counts and Retry-After waits are checked against what it really sent.
"""

import json
import logging
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from etl_assets.assets.raw import raw_assets
from etl_assets.contract import RAW_TABLES
from etl_assets.io_managers.csv_dialect import read_rows
from etl_assets.io_managers.staging import read_manifests
from etl_assets.resources.api_client import ApiClient, ApiClientSettings, PageFetchError
from etl_assets.resources.storage import SnapshotStorage
from etl_assets.stand_in_api.faults import FaultAction, FaultPlanner
from etl_assets.stand_in_api.server import serve_in_thread
from etl_assets.stand_in_api.settings import StandInSettings
from etl_assets_tests.pipeline import PARTITION, materialization_metadata, run_pipeline

SIZE = 300
PAGE_SIZE = 20
PAGES = SIZE // PAGE_SIZE
BASE = StandInSettings(seed=11, tracks=SIZE, users=SIZE, listen_history=SIZE)
# Short waits keep the tests fast; Retry-After still sets its own wait.
FAST_API = {"page_size": PAGE_SIZE, "backoff_seconds": 0.05, "max_backoff_seconds": 0.5}
ENDPOINT_OF = {name: table.endpoint for name, table in RAW_TABLES.items()}
REJECTS_FIELDS = {"page": int, "reason": str, "record": str}

RAW_TRACKS = [asset for asset in raw_assets if asset.key.to_user_string() == "raw_tracks"]


@dataclass(frozen=True)
class ServedRequest:
    at: float
    endpoint: str
    page: int
    size: int
    attempt: int
    action: FaultAction
    status: int | None

    @property
    def failed(self) -> bool:
        return self.action is not FaultAction.SERVE


@contextmanager
def recorded_stand_in(settings: StandInSettings):
    """Serve the stand-in and record every page request's fault decision with its server time."""
    with serve_in_thread(settings) as server:
        planner = server.app.state.planner
        decide = planner.decide
        served: list[ServedRequest] = []

        def recording_decide(endpoint, page, size):
            decision = decide(endpoint, page, size)
            served.append(
                ServedRequest(time.monotonic(), endpoint, page, size, decision.attempt, decision.action, decision.status)
            )
            return decision

        planner.decide = recording_decide
        yield server, served


def as_csv_values(table, row: dict) -> tuple:
    """A row as the raw CSV holds it: lists as compact JSON text, other values unchanged."""
    values = []
    for column in table.columns:
        value = row.get(column)
        if isinstance(value, list):
            value = json.dumps(value, separators=(",", ":"))
        values.append(value)
    return tuple(values)


def is_reject_kind(table, row: dict) -> bool:
    """True for the stand-in's defects that break the contract: a missing field or an id sent as a string."""
    missing = any(column not in row for column in table.columns)
    string_id = any(isinstance(row.get(name), str) for name in ("id", "user_id"))
    return missing or string_id


def landed_rows(data_dir: Path, asset: str) -> Counter:
    table = RAW_TABLES[asset]
    rows = read_rows(str(data_dir / asset / PARTITION / "part-00000.csv"), table.fields)
    return Counter(as_csv_values(table, row) for row in rows)


def landed_rejects(data_dir: Path, asset: str) -> int:
    return len(read_rows(str(data_dir / asset / PARTITION / "_rejects.csv"), REJECTS_FIELDS))


def truth_rows(server, asset: str) -> tuple[Counter, int]:
    """The server's current table minus its contract-breaking rows, and the count of those rows."""
    table = RAW_TABLES[asset]
    truth = server.app.state.store.snapshot(table.endpoint)
    kept = Counter(as_csv_values(table, row) for row in truth if not is_reject_kind(table, row))
    return kept, sum(1 for row in truth if is_reject_kind(table, row))


def failed_requests(served: list[ServedRequest], endpoint: str) -> int:
    return sum(1 for request in served if request.endpoint == endpoint and request.failed)


def step_error(result) -> str:
    """The message of the user error behind the run's one step failure."""
    failures = result.get_step_failure_events()
    error = failures[0].event_specific_data.error
    return error.cause.message if error.cause is not None else error.message


def test_faults_5xx_share(ray_session, tmp_path):
    settings = BASE.with_faults(error_share=0.2, error_statuses=(500, 502, 503, 504))
    with recorded_stand_in(settings) as (server, served):
        result = run_pipeline(server.base_url, tmp_path, assets=raw_assets, **FAST_API)

        for asset, endpoint in ENDPOINT_OF.items():
            expected, rejects = truth_rows(server, asset)
            metadata = materialization_metadata(result, asset)
            assert landed_rows(tmp_path, asset) == expected, asset
            assert metadata["row_count"] == SIZE, asset
            assert metadata["rejected_rows"] == rejects == 0, asset
            assert metadata["duplicates_dropped"] == 0, asset
            assert metadata["passes"] == 1, asset
            assert metadata["retries"] == failed_requests(served, endpoint), asset

    statuses = {request.status for request in served if request.failed}
    assert len(statuses) > 0
    assert statuses <= {500, 502, 503, 504}


def test_faults_resets(ray_session, tmp_path):
    settings = BASE.with_faults(reset_share=0.2, endpoints=("tracks",))
    with recorded_stand_in(settings) as (server, served):
        result = run_pipeline(server.base_url, tmp_path, assets=RAW_TRACKS, **FAST_API)
        expected, _ = truth_rows(server, "raw_tracks")

    metadata = materialization_metadata(result, "raw_tracks")
    resets = failed_requests(served, "tracks")
    assert resets > 0
    assert landed_rows(tmp_path, "raw_tracks") == expected
    assert metadata["retries"] == resets
    assert metadata["passes"] == 1
    assert metadata["duplicates_dropped"] == 0


def test_retries_count_first_page(ray_session, tmp_path):
    # Seed 19 fails the first request of page 1 and serves the second.
    settings = StandInSettings(seed=19, tracks=SIZE, users=SIZE, listen_history=SIZE).with_faults(
        error_share=0.2, error_statuses=(503,), endpoints=("tracks",)
    )
    with recorded_stand_in(settings) as (server, served):
        result = run_pipeline(server.base_url, tmp_path, assets=RAW_TRACKS, **FAST_API)

    first_page = [(request.attempt, request.action) for request in served if request.page == 1]
    assert first_page == [(0, FaultAction.ERROR), (1, FaultAction.SERVE)]
    assert materialization_metadata(result, "raw_tracks")["retries"] == failed_requests(served, "tracks")


def test_throttle_waits_retry_after(ray_session, tmp_path):
    settings = BASE.with_faults(throttle_share=0.1, retry_after_s=1, endpoints=("tracks",))
    with recorded_stand_in(settings) as (server, served):
        result = run_pipeline(server.base_url, tmp_path, assets=RAW_TRACKS, **FAST_API)
        expected, _ = truth_rows(server, "raw_tracks")

    # The next request for the same page cannot come before Retry-After has passed,
    # and both times are taken by the server, so the bound holds on a slow machine too.
    throttled = [request for request in served if request.action is FaultAction.THROTTLE]
    waits = []
    for request in throttled:
        retry = next(
            later for later in served
            if (later.endpoint, later.page, later.size, later.attempt) == (request.endpoint, request.page, request.size, request.attempt + 1)
        )
        waits.append(retry.at - request.at)

    assert len(throttled) > 0
    assert min(waits) >= 1.0
    assert landed_rows(tmp_path, "raw_tracks") == expected
    assert materialization_metadata(result, "raw_tracks")["retries"] == len(throttled)


@pytest.mark.parametrize(("change", "expected_total"), [("grow", SIZE + 10), ("shrink", SIZE - 10)])
def test_table_change_while_paging(ray_session, tmp_path, change, expected_total):
    settings = BASE.with_faults(change=change, change_rows=1, change_max=10, endpoints=("tracks",))
    with recorded_stand_in(settings) as (server, _served):
        result = run_pipeline(server.base_url, tmp_path, assets=RAW_TRACKS, **FAST_API)
        expected, _ = truth_rows(server, "raw_tracks")
        changed = server.app.state.store.changed_rows("tracks")

    metadata = materialization_metadata(result, "raw_tracks")
    landed = landed_rows(tmp_path, "raw_tracks")
    assert changed == 10
    assert landed == expected
    assert sum(landed.values()) == expected_total
    assert max(landed.values()) == 1
    assert metadata["api_total"] == expected_total
    # The first pass spends the whole change budget of 10 rows on its 14 later pages.
    assert metadata["passes"] == 2
    assert metadata["duplicates_dropped"] == 0


def test_dirty_one_percent(ray_session, tmp_path):
    settings = StandInSettings(seed=11, tracks=500, users=500, listen_history=500).with_faults(dirty_share=0.01)
    with recorded_stand_in(settings) as (server, _served):
        result = run_pipeline(server.base_url, tmp_path, assets=raw_assets, **FAST_API)
        defects = server.app.state.store.defects

        for asset, endpoint in ENDPOINT_OF.items():
            expected, rejects = truth_rows(server, asset)
            reject_defects = [
                defect for defect in defects
                if defect["endpoint"] == endpoint and defect["kind"] in ("id_as_string", "user_id_as_string", "missing_field")
            ]
            metadata = materialization_metadata(result, asset)
            assert landed_rows(tmp_path, asset) == expected, asset
            assert rejects == len(reject_defects), asset
            assert metadata["rejected_rows"] == rejects, asset
            assert landed_rejects(tmp_path, asset) == rejects, asset
            assert metadata["row_count"] == 500 - rejects, asset

    # 5 dirty rows per table cover every defect kind, the kept ones included.
    kinds = Counter(defect["kind"] for defect in defects)
    assert kinds == Counter(
        empty_string=3, malformed_duration=1, id_as_string=2, missing_field=3, special_characters=2,
        null_user_id=2, null_items=1, user_id_as_string=1,
    )


def test_reject_share_fails_asset(ray_session, tmp_path):
    settings = BASE.with_faults(dirty_share=0.1)
    run_config = {"ops": {"raw_tracks": {"config": {"max_reject_share": 0.01}}}}
    with recorded_stand_in(settings) as (server, _served):
        _, rejects = truth_rows(server, "raw_tracks")
        result = run_pipeline(
            server.base_url, tmp_path, assets=RAW_TRACKS, run_config=run_config, raise_on_error=False, **FAST_API
        )

    message = step_error(result)
    # 30 dirty tracks rotate through 5 kinds, 2 of which break the contract.
    assert rejects == 12
    assert result.success is False
    assert "raw_tracks: 12 of 300 rows (4.0%) break the API contract, above the 1.0% threshold" in message
    assert not (tmp_path / "raw_tracks" / PARTITION).exists()


def test_retries_spent_first_page(ray_session, tmp_path):
    settings = BASE.with_faults(error_share=1.0, error_statuses=(503,), endpoints=("tracks",))
    with recorded_stand_in(settings) as (server, served):
        result = run_pipeline(
            server.base_url, tmp_path, assets=RAW_TRACKS, raise_on_error=False, max_attempts=2, **FAST_API
        )

    message = step_error(result)
    assert result.success is False
    assert f"fetching /tracks page 1 from {server.base_url}/tracks failed after 2 attempts: last status HTTP 503" in message
    assert [(request.page, request.attempt) for request in served] == [(1, 0), (1, 1)]


def test_retries_spent_ray_page(ray_session, tmp_path):
    settings = BASE.with_faults(error_share=0.5, error_statuses=(502,), endpoints=("tracks",))

    # A fresh planner with the same seed replays the server's decisions: page 1 is
    # served and the pages listed here fail both of their attempts.
    planner = FaultPlanner(settings.seed, settings.faults)
    failing = {
        page for page in range(1, PAGES + 1)
        if all(planner.decide("tracks", page, PAGE_SIZE).action is FaultAction.ERROR for _ in range(2))
    }
    assert 1 not in failing
    assert len(failing) > 0

    with recorded_stand_in(settings) as (server, _served):
        result = run_pipeline(
            server.base_url, tmp_path, assets=RAW_TRACKS, raise_on_error=False, max_attempts=2, **FAST_API
        )

    message = step_error(result)
    named = [page for page in failing if f"fetching /tracks page {page} from " in message]
    assert result.success is False
    assert len(named) == 1
    assert "failed after 2 attempts: last status HTTP 502" in message


def test_page_size_past_max_not_retried(caplog):
    with serve_in_thread(BASE) as server:
        client = ApiClient(ApiClientSettings(base_url=server.base_url, backoff_seconds=0.05))
        with caplog.at_level(logging.WARNING, logger="etl_assets.resources.api_client"):
            with pytest.raises(PageFetchError) as error:
                client.fetch_page("tracks", 1, size=101)

    assert "/tracks rejected page=1 size=101 with HTTP 422" in str(error.value)
    assert "page size must be 1-100" in str(error.value)
    # caplog sees every logger: SQLAlchemy may log here while it closes the SQLite
    # connections of an earlier test's Dagster instance from another thread.
    assert [record for record in caplog.records if record.name == "etl_assets.resources.api_client"] == []


def test_faults_combined(ray_session, tmp_path):
    # 20% of requests fail: 8% HTTP 503, 6% 429 with Retry-After 1 s, 6% resets.
    settings = BASE.with_faults(
        error_share=0.08, error_statuses=(503,), throttle_share=0.06, retry_after_s=1, reset_share=0.06,
        change="grow", change_rows=1, change_max=10, dirty_share=0.01,
    )
    with recorded_stand_in(settings) as (server, served):
        result = run_pipeline(server.base_url, tmp_path, assets=raw_assets, **FAST_API)

        for asset in ENDPOINT_OF:
            expected, rejects = truth_rows(server, asset)
            metadata = materialization_metadata(result, asset)
            assert landed_rows(tmp_path, asset) == expected, asset
            assert metadata["row_count"] == SIZE + 10 - rejects, asset
            assert metadata["rejected_rows"] == rejects, asset
            assert landed_rejects(tmp_path, asset) == rejects, asset
            assert metadata["duplicates_dropped"] == 0, asset

    actions = Counter(request.action for request in served)
    assert result.success is True
    assert actions[FaultAction.ERROR] > 0
    assert actions[FaultAction.THROTTLE] > 0
    assert actions[FaultAction.RESET] > 0


def test_resume_reuses_stored_pages(ray_session, tmp_path):
    failing = BASE.with_faults(error_share=0.3, error_statuses=(503,), endpoints=("tracks",))
    planner = FaultPlanner(failing.seed, failing.faults)
    assert planner.decide("tracks", 1, PAGE_SIZE).action is FaultAction.SERVE

    # First run: one attempt per page, so the failing pages stop the asset after
    # the others are stored in staging.
    with serve_in_thread(failing) as server:
        first = run_pipeline(
            server.base_url, tmp_path, assets=RAW_TRACKS, raise_on_error=False, max_attempts=1, **FAST_API
        )
    staging = SnapshotStorage(base_dir=str(tmp_path)).staging_path("raw_tracks", PARTITION)
    stored = [page for page in read_manifests(staging) if page > 1]

    # Second run: the same seed serves the same table, now without faults.
    with recorded_stand_in(BASE) as (server, served):
        second = run_pipeline(server.base_url, tmp_path, assets=RAW_TRACKS, **FAST_API)
        expected, _ = truth_rows(server, "raw_tracks")

    metadata = materialization_metadata(second, "raw_tracks")
    fetched = sorted(request.page for request in served)
    assert first.success is False
    assert len(stored) > 0
    assert metadata["pages_reused"] == len(stored)
    assert fetched == sorted({1} | set(range(2, PAGES + 1)) - set(stored))
    assert landed_rows(tmp_path, "raw_tracks") == expected
    assert metadata["row_count"] == SIZE
