"""A request budget shared by every Ray task of a run, so a large cluster cannot flood the API.

One Ray actor keeps the budget: at most `max_in_flight` page requests at a
time and at most `rate` new ones per second. A 429 from the API halves the
rate for every task. Each successful page raises it by 2 % of the maximum,
so the rate moves back up toward what the API tolerates.
"""

import asyncio
import time

import ray

# The rate never drops below this, so a run always progresses.
MIN_RATE = 1.0


@ray.remote(num_cpus=0, max_concurrency=10_000)
class RequestBudget:
    def __init__(self, max_in_flight: int, max_rate: float):
        self.max_in_flight = max_in_flight
        self.max_rate = max_rate
        self.rate = max_rate
        self.in_flight = 0
        self.tokens = 1.0
        self.refilled_at = time.monotonic()
        self.throttles = 0

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.refilled_at) * self.rate)
        self.refilled_at = now

    async def acquire(self) -> None:
        while True:
            self._refill()
            if self.in_flight < self.max_in_flight and self.tokens >= 1.0:
                self.tokens -= 1.0
                self.in_flight += 1
                return
            await asyncio.sleep(min(0.05, 1.0 / self.rate))

    def release(self, throttled: bool) -> None:
        self.in_flight -= 1
        if throttled:
            self.throttles += 1
            self.rate = max(MIN_RATE, self.rate / 2)
        else:
            self.rate = min(self.max_rate, self.rate + 0.02 * self.max_rate)

    def state(self) -> dict:
        return {"rate": self.rate, "in_flight": self.in_flight, "throttles": self.throttles}


class SharedBudgetGate:
    """The client side of RequestBudget: blocks a fetching thread until the budget allows a request."""

    def __init__(self, budget: "ray.actor.ActorHandle"):
        self.budget = budget

    def acquire(self) -> None:
        ray.get(self.budget.acquire.remote())

    def release(self, throttled: bool) -> None:
        self.budget.release.remote(throttled)
