"""Seeded generation of the tracks, users and listening-history tables."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from faker import Faker

from .settings import ENDPOINTS, StandInSettings

GENDERS = (
    "Male",
    "Female",
    "Non-binary",
    "Genderqueer",
    "Genderfluid",
    "Agender",
    "Bigender",
    "Gender questioning",
    "Gender nonconforming",
)
GENRES = (
    "Rock",
    "Pop",
    "Hip Hop",
    "Jazz",
    "Electronic",
    "Classical",
    "Country",
    "Blues",
    "R&B",
    "Reggae",
    "Folk",
    "Metal",
    "Punk",
    "Funk",
    "Indie",
    "Alternative",
    "Techno",
)
EMAIL_DOMAINS = ("example.org", "example.com", "example.net")

ID_RANGE_MAX = 100_000
TRACKS_PER_RECORD = 5

# Timestamps fall in the two years before a fixed instant, not before "now", so that
# the same seed gives the same tables on any day.
TIMESTAMP_END = datetime(2026, 1, 1)
TIMESTAMP_SPAN_US = 2 * 365 * 24 * 3600 * 1_000_000

# One Faker call per field makes 200,000-row tables take minutes, so the tables draw
# with a seeded Random from pools that one seeded Faker fills once.
POOL_SIZE = 2000

Row = dict[str, Any]


@dataclass
class Tables:
    """The three tables in served order, and the defects made at generation time."""

    tracks: list[Row]
    users: list[Row]
    listen_history: list[Row]
    defects: list[dict[str, Any]] = field(default_factory=list)

    def rows(self, endpoint: str) -> list[Row]:
        if endpoint not in ENDPOINTS:
            raise KeyError(f"unknown endpoint {endpoint!r}: expected one of {ENDPOINTS}")
        return getattr(self, endpoint)


@dataclass(frozen=True)
class FakerPools:
    """Values drawn once from a seeded Faker."""

    words: tuple[str, ...]
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    full_names: tuple[str, ...]

    @classmethod
    def build(cls, seed: int, size: int = POOL_SIZE) -> FakerPools:
        fake = Faker("en_US")
        fake.seed_instance(seed)
        return cls(
            words=tuple(fake.word() for _ in range(size)),
            first_names=tuple(fake.first_name() for _ in range(size)),
            last_names=tuple(fake.last_name() for _ in range(size)),
            full_names=tuple(fake.name() for _ in range(size)),
        )


def format_timestamp(moment: datetime) -> str:
    # timespec keeps ".000000" on whole seconds, which plain isoformat() drops.
    return moment.isoformat(timespec="microseconds")


class RowFactory:
    """Builds rows of each table from the pools and one seeded `random.Random`."""

    def __init__(self, pools: FakerPools, rng: random.Random) -> None:
        self.pools = pools
        self.rng = rng

    def timestamps(self) -> tuple[str, str]:
        """Return (created_at, updated_at) with updated_at never before created_at."""
        # random() is several times faster than randrange() on spans this large.
        before_end_us = int(self.rng.random() * TIMESTAMP_SPAN_US)
        created = TIMESTAMP_END - timedelta(microseconds=before_end_us)
        updated = created + timedelta(microseconds=int(self.rng.random() * before_end_us))
        return format_timestamp(created), format_timestamp(updated)

    def duration(self) -> str:
        minutes, seconds = divmod(self.rng.randrange(3600), 60)
        return f"{minutes:02d}:{seconds:02d}"

    def track(self, track_id: int) -> Row:
        choice = self.rng.choice
        pools = self.pools
        created_at, updated_at = self.timestamps()
        return {
            "id": track_id,
            "name": choice(pools.words),
            "artist": choice(pools.full_names),
            "songwriters": choice(pools.full_names),
            "duration": self.duration(),
            "genres": choice(pools.words),
            "album": choice(pools.words),
            "created_at": created_at,
            "updated_at": updated_at,
        }

    def user(self, user_id: int) -> Row:
        choice = self.rng.choice
        first_name = choice(self.pools.first_names)
        last_name = choice(self.pools.last_names)
        email = f"{first_name.lower()}{self.rng.randrange(100)}@{choice(EMAIL_DOMAINS)}"
        created_at, updated_at = self.timestamps()
        return {
            "id": user_id,
            "first_name": first_name,
            "last_name": last_name,
            "email": email,
            "gender": choice(GENDERS),
            "favorite_genres": choice(GENRES),
            "created_at": created_at,
            "updated_at": updated_at,
        }

    def listen_record(self, user_ids: Sequence[int], track_ids: Sequence[int]) -> Row:
        created_at, updated_at = self.timestamps()
        return {
            "user_id": self.rng.choice(user_ids),
            "items": self.rng.choices(track_ids, k=TRACKS_PER_RECORD),
            "created_at": created_at,
            "updated_at": updated_at,
        }


def id_range_max(row_count: int) -> int:
    """Return the largest id of a table: 100000, or the row count when that is larger."""
    return max(ID_RANGE_MAX, row_count)


def sample_ids(rng: random.Random, count: int) -> list[int]:
    return rng.sample(range(1, id_range_max(count) + 1), count)


def table_rng(seed: int, endpoint: str) -> random.Random:
    # One generator per table keeps a table unchanged when another table's size changes.
    return random.Random(f"{seed}:{endpoint}:rows")


def generate_tables(settings: StandInSettings) -> Tables:
    """Generate the three tables of `settings`, dirty rows included."""
    from .defects import apply_defects

    pools = FakerPools.build(settings.seed)

    track_factory = RowFactory(pools, table_rng(settings.seed, "tracks"))
    track_ids = sample_ids(track_factory.rng, settings.tracks)
    tracks = [track_factory.track(track_id) for track_id in track_ids]

    user_factory = RowFactory(pools, table_rng(settings.seed, "users"))
    user_ids = sample_ids(user_factory.rng, settings.users)
    users = [user_factory.user(user_id) for user_id in user_ids]

    listen_factory = RowFactory(pools, table_rng(settings.seed, "listen_history"))
    listen_history = [
        listen_factory.listen_record(user_ids, track_ids) for _ in range(settings.listen_history)
    ]

    tables = Tables(tracks=tracks, users=users, listen_history=listen_history)
    tables.defects = apply_defects(tables, settings.seed, settings.faults.dirty_share)
    return tables
