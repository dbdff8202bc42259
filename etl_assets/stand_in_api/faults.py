"""Per-request fault decisions, replayable from the seed."""

from __future__ import annotations

import enum
import random
import threading
from collections import Counter
from dataclasses import dataclass

from .settings import FaultSettings


class FaultAction(enum.Enum):
    SERVE = "serve"
    ERROR = "error"
    RESET = "reset"
    THROTTLE = "throttle"


@dataclass(frozen=True)
class FaultDecision:
    """Fault action for one page request, and the generator for its table change."""

    action: FaultAction
    delay_s: float
    status: int | None
    attempt: int
    rng: random.Random


class FaultPlanner:
    """Decides the fault of each page request.

    The decision for the n-th request of (endpoint, page, size) depends only on
    the seed and those four values, so a retried page can succeed and a second
    run with the same seed and the same requests gets the same faults.
    """

    def __init__(self, seed: int, faults: FaultSettings) -> None:
        self.seed = seed
        self.faults = faults
        self._attempts: Counter[tuple[str, int, int]] = Counter()
        self._lock = threading.Lock()

    def decide(self, endpoint: str, page: int, size: int) -> FaultDecision:
        with self._lock:
            attempt = self._attempts[(endpoint, page, size)]
            self._attempts[(endpoint, page, size)] += 1

        rng = random.Random(f"{self.seed}:{endpoint}:{page}:{size}:{attempt}")
        if endpoint not in self.faults.endpoints:
            return FaultDecision(FaultAction.SERVE, 0.0, None, attempt, rng)

        # Draw every value on every request so that one setting does not shift the
        # random sequence of another.
        faults = self.faults
        jitter_ms = rng.uniform(0.0, faults.latency_jitter_ms)
        draw = rng.random()
        status = rng.choice(faults.error_statuses)
        delay_s = (faults.latency_ms + jitter_ms) / 1000.0

        if draw < faults.reset_share:
            return FaultDecision(FaultAction.RESET, delay_s, None, attempt, rng)
        draw -= faults.reset_share

        if draw < faults.error_share:
            return FaultDecision(FaultAction.ERROR, delay_s, status, attempt, rng)
        draw -= faults.error_share

        if draw < faults.throttle_share:
            return FaultDecision(FaultAction.THROTTLE, delay_s, 429, attempt, rng)

        return FaultDecision(FaultAction.SERVE, delay_s, None, attempt, rng)
