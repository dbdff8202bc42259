"""Dirty rows: seeded defects written into generated tables, with an exact record."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .data import Row, Tables

MALFORMED_DURATIONS = ("", "7:5", "1:02:03", "abc")

# Each value mixes several of: comma, double quote, line break (LF or CRLF), accent, emoji.
SPECIAL_STRINGS = (
    "Beyoncé, Jay-Z",
    'The "Quoted" Band',
    "Line\nBreak",
    "Carriage\r\nReturn",
    "Zoë Ñúñez 🎸",
    'Mötley, "Crüe"\r\n🤘',
    "Sigur Rós\n❤️, live",
)

EMPTY_STRING_FIELDS = {
    "tracks": ("name", "artist", "songwriters", "genres", "album"),
    "users": ("first_name", "last_name", "email"),
}
SPECIAL_STRING_FIELDS = {
    "tracks": ("name", "artist"),
    "users": ("first_name", "last_name"),
}
DEFECT_KINDS = {
    "tracks": (
        "empty_string",
        "malformed_duration",
        "id_as_string",
        "missing_field",
        "special_characters",
    ),
    "users": ("empty_string", "id_as_string", "missing_field", "special_characters"),
    "listen_history": ("null_user_id", "null_items", "user_id_as_string", "missing_field"),
}


def apply_defect(
    endpoint: str, row: Row, kind: str, rng: random.Random
) -> tuple[str, Any]:
    """Write one defect of `kind` into `row`; return the field and its new value.

    A missing field returns None as its value.
    """
    if kind == "empty_string":
        name = rng.choice(EMPTY_STRING_FIELDS[endpoint])
        row[name] = ""
        return name, ""

    if kind == "malformed_duration":
        row["duration"] = rng.choice(MALFORMED_DURATIONS)
        return "duration", row["duration"]

    if kind == "id_as_string":
        row["id"] = str(row["id"])
        return "id", row["id"]

    if kind == "user_id_as_string":
        row["user_id"] = str(row["user_id"])
        return "user_id", row["user_id"]

    if kind == "null_user_id":
        row["user_id"] = None
        return "user_id", None

    if kind == "null_items":
        row["items"] = None
        return "items", None

    if kind == "special_characters":
        name = rng.choice(SPECIAL_STRING_FIELDS[endpoint])
        row[name] = rng.choice(SPECIAL_STRINGS)
        return name, row[name]

    if kind == "missing_field":
        # The id stays, so that the record of the defect can name the row.
        name = rng.choice([key for key in row if key != "id"])
        del row[name]
        return name, None

    raise ValueError(f"unknown defect kind {kind!r}")


def apply_defects(tables: Tables, seed: int, share: float) -> list[dict[str, Any]]:
    """Make `round(share * rows)` rows of each table dirty, one defect per row.

    Kinds rotate through `DEFECT_KINDS[endpoint]`, so each kind gets an equal
    count, give or take one. Returns one record per dirty row, sorted by table
    and row index: {"endpoint", "index", "id", "kind", "field", "value"}. The id
    is the row's integer id before the defect (None in listen_history), and the
    index is its position at generation time, before any grow or shrink.
    """
    defects: list[dict[str, Any]] = []
    if share <= 0:
        return defects

    for endpoint, kinds in DEFECT_KINDS.items():
        rows = tables.rows(endpoint)
        rng = random.Random(f"{seed}:{endpoint}:defects")
        dirty_count = round(share * len(rows))
        dirty_indexes = rng.sample(range(len(rows)), dirty_count)

        table_defects = []
        for position, index in enumerate(dirty_indexes):
            row = rows[index]
            kind = kinds[position % len(kinds)]
            row_id = row.get("id")
            name, value = apply_defect(endpoint, row, kind, rng)
            table_defects.append(
                {
                    "endpoint": endpoint,
                    "index": index,
                    "id": row_id,
                    "kind": kind,
                    "field": name,
                    "value": value,
                }
            )

        defects.extend(sorted(table_defects, key=lambda record: record["index"]))

    return defects
