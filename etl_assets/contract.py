"""The MooVitamix API contract as data: each endpoint's fields, JSON types and key.

Kept free of Spark imports because Ray workers load it to validate rows.
"""

from dataclasses import dataclass


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
