"""The MooVitamix API contract as data: each endpoint's fields, JSON types and key.

Kept free of Spark imports because Ray workers load it to validate rows.
"""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RawTable:
    """The contract of one API endpoint: its fields in served order and their JSON types."""

    endpoint: str
    fields: dict[str, type]
    required: frozenset[str]
    nullable: frozenset[str]
    # The natural key for de-duplication; None means the whole record.
    key: str | None

    @property
    def columns(self) -> list[str]:
        return list(self.fields)


RAW_TABLES: dict[str, RawTable] = {
    "raw_tracks": RawTable(
        endpoint="tracks",
        fields={
            "id": int,
            "name": str,
            "artist": str,
            "songwriters": str,
            "duration": str,
            "genres": str,
            "album": str,
            "created_at": str,
            "updated_at": str,
        },
        required=frozenset({"id", "name", "artist", "songwriters", "duration", "genres", "album", "created_at", "updated_at"}),
        nullable=frozenset(),
        key="id",
    ),
    "raw_users": RawTable(
        endpoint="users",
        fields={
            "id": int,
            "first_name": str,
            "last_name": str,
            "email": str,
            "gender": str,
            "favorite_genres": str,
            "created_at": str,
            "updated_at": str,
        },
        required=frozenset({"id", "first_name", "last_name", "email", "gender", "favorite_genres", "created_at", "updated_at"}),
        nullable=frozenset(),
        key="id",
    ),
    "raw_listen_history": RawTable(
        endpoint="listen_history",
        fields={"user_id": int, "items": list, "created_at": str, "updated_at": str},
        required=frozenset({"user_id", "items", "created_at", "updated_at"}),
        nullable=frozenset({"user_id", "items"}),
        key=None,
    ),
}


def contract_violation(table: RawTable, row: Any) -> str | None:
    """Return why a row breaks the API contract (missing field, wrong JSON type), or None."""
    if not isinstance(row, dict):
        return f"row is a JSON {type(row).__name__}, not an object"
    for name, kind in table.fields.items():
        if name not in row:
            if name in table.required:
                return f"missing required field {name}"
            continue
        value = row[name]
        if value is None:
            if name not in table.nullable:
                return f"null in non-nullable field {name}"
            continue
        # bool is an int subclass in Python but a different JSON type.
        if isinstance(value, bool) or not isinstance(value, kind):
            return f"field {name} is a JSON {json_type(value)}, expected {json_type_name(kind)}"
        if kind is list and not all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            return f"field {name} holds a value that is not an integer"
    return None


def json_type(value: Any) -> str:
    return json_type_name(type(value))


def json_type_name(kind: type) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return names.get(kind, kind.__name__)
