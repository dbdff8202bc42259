"""Tests of the stand-in MooVitamix API against a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import json
import math
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from etl_assets.stand_in_api.data import GENDERS, GENRES, generate_tables
from etl_assets.stand_in_api.defects import DEFECT_KINDS, MALFORMED_DURATIONS
from etl_assets.stand_in_api.server import serve_in_thread
from etl_assets.stand_in_api.settings import StandInSettings

DURATION = re.compile(r"^[0-5][0-9]:[0-5][0-9]$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$")
TRACK_FIELDS = [
    "id", "name", "artist", "songwriters", "duration", "genres", "album", "created_at", "updated_at"
]
USER_FIELDS = [
    "id", "first_name", "last_name", "email", "gender", "favorite_genres", "created_at", "updated_at"
]
LISTEN_FIELDS = ["user_id", "items", "created_at", "updated_at"]
SPECIAL_CHARACTERS = re.compile('[,"\\r\\n]|[^\\x00-\\x7f]')


def fetch_all(base_url: str, endpoint: str, size: int = 100) -> list[dict]:
    rows: list[dict] = []
    first = requests.get(f"{base_url}/{endpoint}", params={"size": size}, timeout=10).json()
    rows.extend(first["items"])
    for page in range(2, first["pages"] + 1):
        body = requests.get(
            f"{base_url}/{endpoint}", params={"page": page, "size": size}, timeout=10
        ).json()
        rows.extend(body["items"])
    return rows


@pytest.fixture(scope="module")
def clean_server():
    with serve_in_thread(StandInSettings()) as server:
        yield server


def test_tables_same_seed_identical():
    settings = StandInSettings(seed=7, tracks=300, users=200, listen_history=400).with_faults(
        dirty_share=0.2
    )
    first = generate_tables(settings)
    second = generate_tables(settings)
    assert json.dumps(first.__dict__) == json.dumps(second.__dict__)


def test_tables_other_seed_differ():
    first = generate_tables(StandInSettings(seed=7, tracks=50, users=50, listen_history=50))
    second = generate_tables(StandInSettings(seed=8, tracks=50, users=50, listen_history=50))
    assert first.tracks != second.tracks
    assert first.users != second.users
    assert first.listen_history != second.listen_history


def test_ids_widen_past_range():
    tables = generate_tables(StandInSettings(tracks=100_005, users=1, listen_history=0))
    ids = [row["id"] for row in tables.tracks]
    assert len(set(ids)) == 100_005
    assert min(ids) >= 1
    assert max(ids) <= 100_005


def test_tracks_contract_shape(clean_server):
    rows = fetch_all(clean_server.base_url, "tracks")
    assert len(rows) == 1000
    assert len({row["id"] for row in rows}) == 1000
    for row in rows:
        assert list(row) == TRACK_FIELDS
        assert type(row["id"]) is int
        assert 1 <= row["id"] <= 100_000
        for name in TRACK_FIELDS[1:]:
            assert type(row[name]) is str, name
        assert DURATION.match(row["duration"]), row["duration"]
        assert " " not in row["name"]
        assert TIMESTAMP.match(row["created_at"]), row["created_at"]
        assert TIMESTAMP.match(row["updated_at"]), row["updated_at"]
        assert row["updated_at"] >= row["created_at"]


def test_users_contract_shape(clean_server):
    rows = fetch_all(clean_server.base_url, "users")
    assert len(rows) == 1000
    assert len({row["id"] for row in rows}) == 1000
    for row in rows:
        assert list(row) == USER_FIELDS
        assert type(row["id"]) is int
        assert 1 <= row["id"] <= 100_000
        assert row["gender"] in GENDERS
        assert row["favorite_genres"] in GENRES
        assert "@" in row["email"]
        assert TIMESTAMP.match(row["created_at"])
        assert row["updated_at"] >= row["created_at"]


def test_listen_history_references(clean_server):
    track_ids = {row["id"] for row in fetch_all(clean_server.base_url, "tracks")}
    user_ids = {row["id"] for row in fetch_all(clean_server.base_url, "users")}
    rows = fetch_all(clean_server.base_url, "listen_history")
    assert len(rows) == 1000
    for row in rows:
        assert list(row) == LISTEN_FIELDS
        assert type(row["user_id"]) is int
        assert row["user_id"] in user_ids
        assert len(row["items"]) == 5
        assert all(type(item) is int and item in track_ids for item in row["items"])
        assert TIMESTAMP.match(row["created_at"])
        assert row["updated_at"] >= row["created_at"]


def test_page_math_uneven_size(clean_server):
    url = f"{clean_server.base_url}/tracks"
    first = requests.get(url, params={"size": 7}, timeout=10).json()
    assert first["total"] == 1000
    assert first["pages"] == 143
    assert first["page"] == 1
    assert first["size"] == 7
    assert len(first["items"]) == 7

    last = requests.get(url, params={"size": 7, "page": 143}, timeout=10).json()
    assert len(last["items"]) == 6

    past = requests.get(url, params={"size": 7, "page": 144}, timeout=10).json()
    assert past["items"] == []
    assert past["total"] == 1000
    assert past["pages"] == 143


def test_page_defaults(clean_server):
    body = requests.get(f"{clean_server.base_url}/users", timeout=10).json()
    assert list(body) == ["items", "total", "page", "size", "pages"]
    assert body["page"] == 1
    assert body["size"] == 100
    assert body["pages"] == 10
    assert len(body["items"]) == 100


@pytest.mark.parametrize(
    ("tracks", "expected_total", "expected_pages", "expected_items"),
    [(1, 1, 1, 1), (0, 0, 0, 0)],
)
def test_page_math_tiny_tables(tracks, expected_total, expected_pages, expected_items):
    settings = StandInSettings(tracks=tracks, users=1, listen_history=0)
    with serve_in_thread(settings) as server:
        body = requests.get(f"{server.base_url}/tracks", timeout=10).json()
        empty = requests.get(f"{server.base_url}/listen_history", timeout=10).json()
    assert body["total"] == expected_total
    assert body["pages"] == expected_pages
    assert len(body["items"]) == expected_items
    assert empty == {"items": [], "total": 0, "page": 1, "size": 100, "pages": 0}


@pytest.mark.parametrize(
    ("query", "expected_detail"),
    [
        (
            {"size": 101},
            {"type": "less_than_equal", "loc": ["query", "size"],
             "msg": "Input should be less than or equal to 100", "input": "101", "ctx": {"le": 100}},
        ),
        (
            {"size": 0},
            {"type": "greater_than_equal", "loc": ["query", "size"],
             "msg": "Input should be greater than or equal to 1", "input": "0", "ctx": {"ge": 1}},
        ),
        (
            {"page": 0},
            {"type": "greater_than_equal", "loc": ["query", "page"],
             "msg": "Input should be greater than or equal to 1", "input": "0", "ctx": {"ge": 1}},
        ),
    ],
)
def test_out_of_range_422(clean_server, query, expected_detail):
    response = requests.get(f"{clean_server.base_url}/tracks", params=query, timeout=10)
    assert response.status_code == 422
    assert response.json() == {"detail": [expected_detail]}


def test_root_redirects_to_docs(clean_server):
    response = requests.get(f"{clean_server.base_url}/", allow_redirects=False, timeout=10)
    assert response.status_code in (307, 302)
    assert response.headers["location"] == "/docs"


def test_openapi_lists_contract_paths(clean_server):
    schema = requests.get(f"{clean_server.base_url}/openapi.json", timeout=10).json()
    assert sorted(schema["paths"]) == ["/listen_history", "/tracks", "/users"]
    parameters = {p["name"]: p for p in schema["paths"]["/tracks"]["get"]["parameters"]}
    assert parameters["size"]["schema"]["default"] == 100
    assert parameters["size"]["schema"]["maximum"] == 100
    assert parameters["page"]["schema"]["default"] == 1


def test_truth_equals_all_pages(clean_server):
    for endpoint in ("tracks", "users", "listen_history"):
        truth = requests.get(f"{clean_server.base_url}/_truth/{endpoint}", timeout=10).json()
        assert truth == fetch_all(clean_server.base_url, endpoint, size=37), endpoint
        assert truth == clean_server.app.state.store.snapshot(endpoint)


def test_truth_unknown_table_404(clean_server):
    response = requests.get(f"{clean_server.base_url}/_truth/albums", timeout=10)
    assert response.status_code == 404


def test_latency_at_least_configured():
    settings = StandInSettings(tracks=10, users=10, listen_history=10).with_faults(
        latency_ms=150, latency_jitter_ms=50
    )
    with serve_in_thread(settings) as server:
        for page in range(1, 4):
            started = time.perf_counter()
            response = requests.get(f"{server.base_url}/tracks", params={"page": page}, timeout=10)
            elapsed = time.perf_counter() - started
            assert response.status_code == 200
            assert elapsed >= 0.150
            assert elapsed < 1.0


def error_statuses(seed: int, requests_count: int) -> list[int]:
    settings = StandInSettings(seed=seed, tracks=100, users=10, listen_history=10).with_faults(
        error_share=0.3, error_statuses=(502, 503)
    )
    statuses = []
    with serve_in_thread(settings) as server, requests.Session() as session:
        for index in range(requests_count):
            response = session.get(
                f"{server.base_url}/tracks", params={"page": 1 + index % 10, "size": 10}, timeout=10
            )
            statuses.append(response.status_code)
    return statuses


def test_error_share_and_replay():
    first = error_statuses(seed=3, requests_count=400)
    counts = Counter(first)
    assert set(counts) == {200, 502, 503}
    errors = counts[502] + counts[503]
    # 400 draws at p = 0.3 have a standard deviation of about 9.2, so +-40 is over 4 sigma.
    assert 80 <= errors <= 160
    assert first == error_statuses(seed=3, requests_count=400)
    assert first != error_statuses(seed=4, requests_count=400)


def test_retried_page_can_succeed():
    settings = StandInSettings(tracks=100, users=10, listen_history=10).with_faults(error_share=0.5)
    with serve_in_thread(settings) as server:
        statuses = [
            requests.get(f"{server.base_url}/tracks", params={"page": 2}, timeout=10).status_code
            for _ in range(20)
        ]
    assert 200 in statuses
    assert any(status >= 500 for status in statuses)


def test_throttle_sends_retry_after():
    settings = StandInSettings(tracks=10, users=10, listen_history=10).with_faults(
        throttle_share=1.0, retry_after_s=7
    )
    with serve_in_thread(settings) as server:
        response = requests.get(f"{server.base_url}/users", timeout=10)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"


def test_reset_is_connection_error():
    settings = StandInSettings(tracks=10, users=10, listen_history=10).with_faults(
        reset_share=1.0, endpoints=("tracks",)
    )
    with serve_in_thread(settings) as server:
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"{server.base_url}/tracks", timeout=10)
        # Faults limited to /tracks leave the other tables and the server working.
        assert requests.get(f"{server.base_url}/users", timeout=10).status_code == 200


def test_grow_raises_total_between_pages():
    settings = StandInSettings(tracks=1000, users=10, listen_history=10).with_faults(
        change="grow", change_rows=3, change_max=5
    )
    with serve_in_thread(settings) as server:
        url = f"{server.base_url}/tracks"
        first = requests.get(url, params={"page": 1}, timeout=10).json()
        second = requests.get(url, params={"page": 2}, timeout=10).json()
        third = requests.get(url, params={"page": 3}, timeout=10).json()
        fourth = requests.get(url, params={"page": 4}, timeout=10).json()
        truth = server.app.state.store.snapshot("tracks")

    assert first["total"] == 1000
    assert second["total"] == 1003
    assert third["total"] == 1005
    assert fourth["total"] == 1005
    assert second["pages"] == 11
    assert len(truth) == 1005
    assert len({row["id"] for row in truth}) == 1005
    # Rows go in before the requested page, so the first page's rows shift into page 2.
    assert second["items"][:3] == first["items"][-3:]


def test_shrink_lowers_total_between_pages():
    settings = StandInSettings(tracks=1000, users=10, listen_history=10).with_faults(
        change="shrink", change_rows=4, change_max=100
    )
    with serve_in_thread(settings) as server:
        url = f"{server.base_url}/tracks"
        first = requests.get(url, params={"page": 1}, timeout=10).json()
        second = requests.get(url, params={"page": 2}, timeout=10).json()
        truth = server.app.state.store.snapshot("tracks")

    assert first["total"] == 1000
    assert second["total"] == 996
    assert len(truth) == 996
    first_ids = [row["id"] for row in first["items"]]
    assert second["items"][0]["id"] not in first_ids[:96]


def test_grow_listen_history_references_existing():
    settings = StandInSettings(tracks=50, users=20, listen_history=300).with_faults(
        change="grow", change_rows=10, change_max=10, endpoints=("listen_history",)
    )
    with serve_in_thread(settings) as server:
        requests.get(f"{server.base_url}/listen_history", params={"page": 2}, timeout=10)
        store = server.app.state.store
        records = store.snapshot("listen_history")
        track_ids = {row["id"] for row in store.snapshot("tracks")}
        user_ids = {row["id"] for row in store.snapshot("users")}
    assert len(records) == 310
    assert all(record["user_id"] in user_ids for record in records)
    assert all(set(record["items"]) <= track_ids for record in records)


def test_dirty_rows_match_defects():
    settings = StandInSettings(tracks=400, users=400, listen_history=400).with_faults(
        dirty_share=0.25
    )
    with serve_in_thread(settings) as server:
        served = {
            endpoint: fetch_all(server.base_url, endpoint)
            for endpoint in ("tracks", "users", "listen_history")
        }
        defects = requests.get(f"{server.base_url}/_defects", timeout=10).json()

    assert defects == server.app.state.store.defects
    assert len(defects) == 300
    kinds = Counter((defect["endpoint"], defect["kind"]) for defect in defects)
    for endpoint, endpoint_kinds in DEFECT_KINDS.items():
        per_kind = [kinds[(endpoint, kind)] for kind in endpoint_kinds]
        assert sum(per_kind) == 100
        assert max(per_kind) - min(per_kind) <= 1

    tracks = served["tracks"]
    assert sum(type(row.get("id")) is str for row in tracks) == kinds[("tracks", "id_as_string")]
    assert sum(len(row) < len(TRACK_FIELDS) for row in tracks) == kinds[("tracks", "missing_field")]
    malformed = [row["duration"] for row in tracks if "duration" in row and not DURATION.match(row["duration"])]
    assert len(malformed) == kinds[("tracks", "malformed_duration")]
    assert set(malformed) <= set(MALFORMED_DURATIONS)
    special = [row for row in tracks if SPECIAL_CHARACTERS.search(row.get("name", "") + row.get("artist", ""))]
    assert len(special) == kinds[("tracks", "special_characters")]
    empty = [row for row in tracks if "" in [row.get(name) for name in TRACK_FIELDS if name != "duration"]]
    assert len(empty) == kinds[("tracks", "empty_string")]

    users = served["users"]
    assert sum(type(row.get("id")) is str for row in users) == kinds[("users", "id_as_string")]
    assert sum(len(row) < len(USER_FIELDS) for row in users) == kinds[("users", "missing_field")]
    special_users = [
        row for row in users
        if SPECIAL_CHARACTERS.search(row.get("first_name", "") + row.get("last_name", ""))
    ]
    assert len(special_users) == kinds[("users", "special_characters")]

    records = served["listen_history"]
    assert sum("user_id" in row and row["user_id"] is None for row in records) == kinds[
        ("listen_history", "null_user_id")
    ]
    assert sum("items" in row and row["items"] is None for row in records) == kinds[
        ("listen_history", "null_items")
    ]
    assert sum(type(row.get("user_id")) is str for row in records) == kinds[
        ("listen_history", "user_id_as_string")
    ]
    assert sum(len(row) < len(LISTEN_FIELDS) for row in records) == kinds[
        ("listen_history", "missing_field")
    ]

    for defect in defects:
        if defect["endpoint"] != "listen_history":
            row = served[defect["endpoint"]][defect["index"]]
            assert int(row["id"]) == defect["id"]


def test_special_characters_cover_cases():
    tables = generate_tables(
        StandInSettings(tracks=2000, users=10, listen_history=0).with_faults(dirty_share=0.5)
    )
    values = "".join(
        defect["value"] for defect in tables.defects if defect["kind"] == "special_characters"
    )
    for fragment in [",", '"', "\r\n", "é", "🎸"]:
        assert fragment in values, fragment
    assert "\n" in values.replace("\r\n", "")


def wait_for_port_file(path: Path, process: subprocess.Popen, timeout_s: float = 30) -> int:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "port file not written in time"
        time.sleep(0.05)
    return int(path.read_text())


def test_cli_serves_on_free_port(tmp_path):
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [sys.executable, "-m", "etl_assets.stand_in_api.cli", "--port", "0",
         "--port-file", str(port_file), "--tracks", "25", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        port = wait_for_port_file(port_file, process)
        body = requests.get(f"http://127.0.0.1:{port}/tracks", timeout=10).json()
        assert body["total"] == 25
        assert body["pages"] == 1
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=15)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal so the
    # parent sees the usual "killed by SIGTERM" status.
    assert process.returncode == -signal.SIGTERM
    assert "Traceback" not in stderr


def test_cli_port_in_use_exits_2():
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "etl_assets.stand_in_api.cli", "--port", str(port)],
            capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr == (
        f"error: port {port} on 127.0.0.1 is already in use; "
        "pass --port 0 for a free port or stop the other process\n"
    )


def test_env_settings_parsed():
    settings = StandInSettings.from_env(
        {"STAND_IN_SEED": "9", "STAND_IN_TRACKS": "5", "STAND_IN_ERROR_STATUSES": "503,504",
         "STAND_IN_CHANGE": "grow", "STAND_IN_FAULT_ENDPOINTS": "users"}
    )
    assert settings.seed == 9
    assert settings.tracks == 5
    assert settings.faults.error_statuses == (503, 504)
    assert settings.faults.change == "grow"
    assert settings.faults.endpoints == ("users",)


def test_invalid_shares_rejected():
    with pytest.raises(ValueError, match="expected <= 1"):
        StandInSettings().with_faults(error_share=0.6, reset_share=0.5)
