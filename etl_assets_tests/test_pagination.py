"""Paging edge cases: a page size that does not divide the total, one row, zero rows, and block splitting."""

import json
import logging
import math

import pytest
from upath import UPath

from etl_assets.assets.ingest import ingest_endpoint, split_blocks
from etl_assets.assets.raw import raw_assets
from etl_assets.contract import RAW_TABLES
from etl_assets.io_managers.csv_dialect import read_rows
from etl_assets.io_managers.staging import page_csv
from etl_assets.resources.api_client import ApiClientSettings
from etl_assets.stand_in_api.server import serve_in_thread
from etl_assets.stand_in_api.settings import StandInSettings
from etl_assets_tests.pipeline import PARTITION, materialization_metadata, run_pipeline

LOG = logging.getLogger(__name__)
ODD_PAGE_SIZE = 7


def served_rows(rows: list[dict]) -> list[dict]:
    """Parse `items` back from its stored JSON text so rows compare with the served ones."""
    return [{**row, "items": json.loads(row["items"])} if row.get("items") is not None else row for row in rows]


def staged_rows(snapshot) -> list[dict]:
    staging = UPath(snapshot.staging_uri)
    rows = []
    for page in sorted(snapshot.manifests):
        with page_csv(staging, page).open("rb") as source:
            rows += read_rows(source, snapshot.table.fields)
    return served_rows(rows)


def ingest(base_url: str, name: str, staging, page_size: int = 100):
    return ingest_endpoint(
        ApiClientSettings(base_url=base_url, page_size=page_size, max_attempts=2, backoff_seconds=0),
        RAW_TABLES[name],
        UPath(staging),
        tasks=2,
        threads=2,
        max_passes=2,
        log=LOG,
    )


@pytest.fixture(scope="module")
def odd_pages(ray_session, small_stand_in, tmp_path_factory):
    staging = tmp_path_factory.mktemp("odd") / "staging"
    return ingest(small_stand_in.base_url, "raw_tracks", staging, page_size=ODD_PAGE_SIZE)


def test_odd_page_size_pages(odd_pages, small_stand_in):
    total = len(small_stand_in.app.state.store.snapshot("tracks"))
    assert odd_pages.total == total
    assert odd_pages.pages == math.ceil(total / ODD_PAGE_SIZE)
    assert sorted(odd_pages.manifests) == list(range(1, odd_pages.pages + 1))


def test_odd_page_size_last_page(odd_pages, small_stand_in):
    total = len(small_stand_in.app.state.store.snapshot("tracks"))
    last = odd_pages.manifests[odd_pages.pages]
    assert total % ODD_PAGE_SIZE != 0
    assert last.rows == total % ODD_PAGE_SIZE


def test_odd_page_size_rows_exact(odd_pages, small_stand_in):
    assert staged_rows(odd_pages) == small_stand_in.app.state.store.snapshot("tracks")


def test_odd_page_size_pipeline(spark_session, ray_session, small_stand_in, tmp_path):
    listen_history = [asset for asset in raw_assets if asset.key.to_user_string() == "raw_listen_history"]
    result = run_pipeline(small_stand_in.base_url, tmp_path, assets=listen_history, page_size=ODD_PAGE_SIZE)
    metadata = materialization_metadata(result, "raw_listen_history")
    truth = small_stand_in.app.state.store.snapshot("listen_history")
    written = read_rows(str(tmp_path / "raw_listen_history" / PARTITION / "part-00000.csv"), RAW_TABLES["raw_listen_history"].fields)

    assert metadata["pages"] == math.ceil(len(truth) / ODD_PAGE_SIZE)
    assert metadata["row_count"] == len(truth)
    assert metadata["duplicates_dropped"] == 0
    assert served_rows(written) == truth


@pytest.fixture(scope="module")
def one_row_server():
    with serve_in_thread(StandInSettings(seed=5, tracks=1, users=1, listen_history=1)) as server:
        yield server


@pytest.mark.parametrize("name", list(RAW_TABLES))
def test_one_row_table(ray_session, one_row_server, tmp_path, name):
    snapshot = ingest(one_row_server.base_url, name, tmp_path / "staging")
    truth = one_row_server.app.state.store.snapshot(RAW_TABLES[name].endpoint)

    assert len(truth) == 1
    assert snapshot.total == 1
    assert snapshot.pages == 1
    assert sorted(snapshot.manifests) == [1]
    assert staged_rows(snapshot) == truth


@pytest.fixture(scope="module")
def empty_run(spark_session, ray_session, tmp_path_factory):
    """Land all three raw tables from a stand-in that serves zero rows, which StandInSettings allows for every table."""
    data_dir = tmp_path_factory.mktemp("empty")
    with serve_in_thread(StandInSettings(seed=5, tracks=0, users=0, listen_history=0)) as server:
        result = run_pipeline(server.base_url, data_dir, assets=raw_assets)
    return result, data_dir


@pytest.mark.parametrize("name", list(RAW_TABLES))
def test_zero_rows_metadata(empty_run, name):
    metadata = materialization_metadata(empty_run[0], name)
    assert metadata["row_count"] == 0
    assert metadata["api_total"] == 0
    # The API reports zero pages for an empty table, and its page 1 is an empty list.
    assert metadata["pages"] == 0


@pytest.mark.parametrize("name", list(RAW_TABLES))
def test_zero_rows_header_only(empty_run, name):
    text = (empty_run[1] / name / PARTITION / "part-00000.csv").read_text(encoding="utf-8")
    assert text == ",".join(RAW_TABLES[name].columns) + "\n"


@pytest.mark.parametrize(
    ("pages", "count", "expected"),
    [
        ([], 4, []),
        ([2], 4, [[2]]),
        ([2, 3], 5, [[2], [3]]),
        ([2, 3, 4], 0, [[2, 3, 4]]),
        ([2, 3, 4], 1, [[2, 3, 4]]),
        ([2, 3, 4, 5, 6], 2, [[2, 3, 4], [5, 6]]),
        (list(range(2, 11)), 3, [[2, 3, 4], [5, 6, 7], [8, 9, 10]]),
        (list(range(2, 12)), 4, [[2, 3, 4], [5, 6, 7], [8, 9], [10, 11]]),
        ([4, 5, 9], 2, [[4, 5], [9]]),
    ],
)
def test_split_blocks(pages, count, expected):
    assert split_blocks(pages, count) == expected
