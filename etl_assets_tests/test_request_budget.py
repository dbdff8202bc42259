"""The request budget actor that the raw assets of one run share, on a real local Ray."""

import gc
import time

import ray

from etl_assets.assets.raw import IngestionConfig, shared_budget

# Time for Ray to destroy an actor whose handles are gone: under a second on this machine's local Ray.
ACTOR_GONE_SECONDS = 2.0


def actor_exists(name: str) -> bool:
    try:
        ray.get_actor(name)
    except ValueError:
        return False
    return True


def test_budget_outlives_first_asset(ray_session):
    config = IngestionConfig()
    first = shared_budget("budget-run-a", config)
    ray.get(first.acquire.remote())

    # The first raw asset returns and drops its handle, as a step does.
    del first
    gc.collect()
    time.sleep(ACTOR_GONE_SECONDS)

    second = shared_budget("budget-run-a", config)
    assert ray.get(second.state.remote())["in_flight"] == 1


def test_budget_new_run_new_actor(ray_session):
    config = IngestionConfig(max_requests_per_second=7.0)
    shared_budget("budget-run-b", config)

    later = shared_budget("budget-run-c", config)
    assert ray.get(later.state.remote())["in_flight"] == 0

    # The earlier run's actor is released once a new run takes the slot.
    deadline = time.monotonic() + 30
    while actor_exists("etl-request-budget-budget-run-b") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not actor_exists("etl-request-budget-budget-run-b")


def test_budget_same_run_same_limits(ray_session):
    shared_budget("budget-run-d", IngestionConfig(max_requests_per_second=3.0))

    again = shared_budget("budget-run-d", IngestionConfig(max_requests_per_second=900.0))
    assert ray.get(again.state.remote())["rate"] == 3.0
