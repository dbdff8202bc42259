"""Resources: usable CPUs, Spark settings, and the API client against the stand-in."""

import math
import os
import re
import socket

import pytest

from etl_assets.resources import cpu
from etl_assets.resources.api_client import ApiClient, ApiClientSettings, PageFetchError, redact_url
from etl_assets.resources.cpu import cgroup_cpu_limit, usable_cpu_count
from etl_assets.resources.spark import SparkResource


def test_usable_cpu_count_matches_affinity():
    expected = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit()
    if limit is not None:
        expected = min(expected, max(1, math.floor(limit)))
    assert usable_cpu_count() == expected


@pytest.fixture
def cgroup_files(tmp_path, monkeypatch):
    """Point the cgroup readers at files in tmp_path: a CPU quota cannot be set on the test machine."""
    paths = {"v2": tmp_path / "cpu.max", "quota": tmp_path / "cfs_quota_us", "period": tmp_path / "cfs_period_us"}
    monkeypatch.setattr(cpu, "CGROUP_V2_CPU_MAX", paths["v2"])
    monkeypatch.setattr(cpu, "CGROUP_V1_QUOTA", paths["quota"])
    monkeypatch.setattr(cpu, "CGROUP_V1_PERIOD", paths["period"])
    return paths


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"v2": "150000 100000\n"}, 1.5),
        ({"v2": "max 100000\n"}, None),
        ({"v2": "200000 100000\n", "quota": "50000", "period": "100000"}, 2.0),
        ({"quota": "50000\n", "period": "100000\n"}, 0.5),
        ({"quota": "-1\n", "period": "100000\n"}, None),
        ({"v2": "garbage\n", "quota": "300000", "period": "100000"}, 3.0),
        ({}, None),
    ],
)
def test_cgroup_cpu_limit(cgroup_files, files, limit):
    for name, text in files.items():
        cgroup_files[name].write_text(text)
    assert cgroup_cpu_limit() == limit


def test_usable_cpu_count_capped_by_quota(cgroup_files):
    # A half-CPU quota still leaves one CPU.
    cgroup_files["v2"].write_text("50000 100000\n")
    assert usable_cpu_count() == 1


def test_spark_conf_sized_by_cores():
    conf = SparkResource(cores=3).spark_conf()
    assert conf["spark.master"] == "local[3]"
    assert conf["spark.sql.shuffle.partitions"] == "6"


def test_spark_conf_default_cores():
    cores = usable_cpu_count()
    conf = SparkResource().spark_conf()
    assert conf["spark.master"] == f"local[{cores}]"
    assert conf["spark.sql.shuffle.partitions"] == str(2 * cores)


def test_spark_conf_default_driver_memory():
    memory = SparkResource().spark_conf()["spark.driver.memory"]
    assert re.fullmatch(r"[1-9][0-9]*g", memory), memory
    assert 1 <= int(memory[:-1]) <= 16


def test_spark_conf_explicit_values():
    conf = SparkResource(cores=2, driver_memory="3g", shuffle_partitions=5, app_name="tests").spark_conf()
    assert conf["spark.driver.memory"] == "3g"
    assert conf["spark.sql.shuffle.partitions"] == "5"
    assert conf["spark.app.name"] == "tests"


def test_spark_conf_utc():
    conf = SparkResource(cores=1).spark_conf()
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert conf["spark.driver.extraJavaOptions"] == "-Duser.timezone=UTC"


def test_spark_conf_extra_conf_wins():
    extra = {"spark.sql.shuffle.partitions": "7", "spark.master": "local[1]", "spark.sql.adaptive.enabled": "false"}
    conf = SparkResource(cores=4, extra_conf=extra).spark_conf()
    assert {key: conf[key] for key in extra} == extra


def test_spark_conf_connect_master():
    conf = SparkResource(master="sc://127.0.0.1:15002", cores=2).spark_conf()
    assert conf["spark.remote"] == "sc://127.0.0.1:15002"
    assert "spark.master" not in conf


def test_api_client_page_exact(small_stand_in):
    truth = small_stand_in.app.state.store.snapshot("tracks")
    page = ApiClient(ApiClientSettings(base_url=small_stand_in.base_url, page_size=100)).fetch_page("tracks", 2)

    assert page.total == len(truth)
    assert page.pages == math.ceil(len(truth) / 100)
    assert page.attempts == 1
    assert page.items == truth[100:200]


def test_api_client_page_size_422(small_stand_in):
    client = ApiClient(ApiClientSettings(base_url=small_stand_in.base_url))
    with pytest.raises(PageFetchError) as caught:
        client.fetch_page("tracks", 1, size=101)

    message = str(caught.value)
    assert message.startswith("/tracks rejected page=1 size=101 with HTTP 422"), message
    assert "1-100" in message


def test_api_client_settings_reject_page_size():
    with pytest.raises(ValueError, match="page size 101 is invalid"):
        ApiClientSettings(base_url="http://127.0.0.1:1", page_size=101)


def test_api_client_closed_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ApiClient(ApiClientSettings(base_url=f"http://127.0.0.1:{port}", max_attempts=2, backoff_seconds=0))

    with pytest.raises(PageFetchError) as caught:
        client.fetch_page("tracks", 1)

    message = str(caught.value)
    assert f"from http://127.0.0.1:{port}/tracks" in message, message
    assert "after 2 attempts" in message, message


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("https://user:secret@api.example.com:8443/v1/tracks?token=abc&page=2", "https://***@api.example.com:8443/v1/tracks?token=***&page=***"),
        ("https://:secret@api.example.com/tracks", "https://***@api.example.com/tracks"),
        ("https://user@api.example.com/tracks?key=", "https://***@api.example.com/tracks?key=***"),
        ("http://127.0.0.1:8000/tracks", "http://127.0.0.1:8000/tracks"),
        ("https://api.example.com/tracks#section", "https://api.example.com/tracks"),
    ],
)
def test_redact_url(url, redacted):
    assert redact_url(url) == redacted
