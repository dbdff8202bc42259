"""Pydantic models of the served rows and pages, used for the OpenAPI schema."""

from __future__ import annotations

from datetime import datetime

from fastapi import Query
from fastapi_pagination import Page
from fastapi_pagination.customization import CustomizedPage, UseParamsFields
from pydantic import BaseModel


class Track(BaseModel):
    id: int
    name: str
    artist: str
    songwriters: str
    duration: str
    genres: str
    album: str
    created_at: datetime
    updated_at: datetime


class User(BaseModel):
    id: int
    first_name: str
    last_name: str
    email: str
    gender: str
    favorite_genres: str
    created_at: datetime
    updated_at: datetime


class ListenHistory(BaseModel):
    user_id: int | None
    items: list[int] | None
    created_at: datetime
    updated_at: datetime


# The default page size of fastapi-pagination is 50; the MooVitamix API serves 100.
ServedPage = CustomizedPage[Page, UseParamsFields(size=Query(100, ge=1, le=100))]
PageParams = ServedPage.__params_type__

ROW_MODELS: dict[str, type[BaseModel]] = {
    "tracks": Track,
    "users": User,
    "listen_history": ListenHistory,
}
