"""In-memory tables behind the page endpoints, changed under a lock."""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

from .data import FakerPools, Row, RowFactory, Tables, id_range_max
from .settings import ENDPOINTS, FaultSettings

logger = logging.getLogger(__name__)


class TableStore:
    """The current rows of each table, and the grow or shrink changes made to them."""

    def __init__(self, tables: Tables, seed: int, faults: FaultSettings) -> None:
        self.tables = tables
        self.seed = seed
        self.faults = faults
        self._rows = {endpoint: list(tables.rows(endpoint)) for endpoint in ENDPOINTS}
        self._changed_rows = dict.fromkeys(ENDPOINTS, 0)
        self._lock = threading.Lock()

        # Pools and used ids are only needed to grow tables, so build them lazily.
        self._pools: FakerPools | None = None
        self._used_ids: dict[str, set[Any]] = {}

    @property
    def defects(self) -> list[dict[str, Any]]:
        return self.tables.defects

    def snapshot(self, endpoint: str) -> list[Row]:
        """Return a copy of the current rows of `endpoint` in served order."""
        with self._lock:
            return list(self._rows[endpoint])

    def changed_rows(self, endpoint: str) -> int:
        """Return how many rows grow or shrink has inserted or removed so far."""
        with self._lock:
            return self._changed_rows[endpoint]

    def read_page(self, endpoint: str, offset: int, limit: int) -> tuple[list[Row], int]:
        """Return the rows of one page and the table's total."""
        with self._lock:
            rows = self._rows[endpoint]
            return rows[offset : offset + limit], len(rows)

    def change_before(self, endpoint: str, offset: int, rng: random.Random) -> int:
        """Grow or shrink the table at positions before `offset`, per `faults.change`.

        Returns the number of rows inserted or removed, which stays 0 once
        `change_max` rows have changed in this table.
        """
        mode = self.faults.change
        if mode == "none" or endpoint not in self.faults.endpoints:
            return 0

        with self._lock:
            rows = self._rows[endpoint]
            budget = self.faults.change_max - self._changed_rows[endpoint]
            count = min(self.faults.change_rows, budget)
            end = min(offset, len(rows))
            if mode == "shrink":
                count = min(count, end)
            if count <= 0:
                return 0

            if mode == "grow":
                self._insert_rows(endpoint, rows, count, end, rng)
            else:
                for _ in range(count):
                    del rows[rng.randrange(end)]
                    end -= 1

            self._changed_rows[endpoint] += count

        logger.info("%s %s rows of %s before offset %s", mode, count, endpoint, offset)
        return count

    def _insert_rows(
        self, endpoint: str, rows: list[Row], count: int, end: int, rng: random.Random
    ) -> None:
        factory = RowFactory(self._faker_pools(), rng)
        for _ in range(count):
            row = self._new_row(endpoint, factory)
            rows.insert(rng.randrange(end + 1), row)

    def _faker_pools(self) -> FakerPools:
        if self._pools is None:
            self._pools = FakerPools.build(self.seed)
        return self._pools

    def _new_row(self, endpoint: str, factory: RowFactory) -> Row:
        if endpoint == "listen_history":
            user_ids = [row["id"] for row in self._rows["users"]]
            track_ids = [row["id"] for row in self._rows["tracks"]]
            return factory.listen_record(user_ids, track_ids)

        used = self._used_ids.get(endpoint)
        if used is None:
            # Dirty rows may carry the id as a string, so compare ids as integers.
            used = {int(row["id"]) for row in self._rows[endpoint]}
            self._used_ids[endpoint] = used

        new_id = self._unused_id(used, factory.rng)
        used.add(new_id)
        if endpoint == "tracks":
            return factory.track(new_id)
        return factory.user(new_id)

    @staticmethod
    def _unused_id(used: set[int], rng: random.Random) -> int:
        id_max = id_range_max(len(used) + 1)
        if len(used) < id_max // 2:
            while True:
                candidate = rng.randint(1, id_max)
                if candidate not in used:
                    return candidate

        # A crowded range makes rejection sampling slow, so pick from the free ids.
        free = sorted(set(range(1, id_max + 1)) - used)
        return rng.choice(free)
