"""Settings of the stand-in server: data size, seed and fault injection."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

ENDPOINTS = ("tracks", "users", "listen_history")
CHANGE_MODES = ("none", "grow", "shrink")
ENV_PREFIX = "STAND_IN_"

ChangeMode = Literal["none", "grow", "shrink"]


@dataclass(frozen=True)
class FaultSettings:
    """Faults injected into the page endpoints. All are off by default."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_share: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503, 504)
    reset_share: float = 0.0
    throttle_share: float = 0.0
    retry_after_s: int = 1
    change: ChangeMode = "none"
    change_rows: int = 1
    change_max: int = 10
    dirty_share: float = 0.0
    endpoints: tuple[str, ...] = ENDPOINTS

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.latency_jitter_ms < 0:
            raise ValueError(
                f"invalid latency {self.latency_ms} ms + jitter {self.latency_jitter_ms} ms: "
                "both must be >= 0"
            )

        for name in ("error_share", "reset_share", "throttle_share", "dirty_share"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"invalid {name} {share}: expected a share between 0 and 1")

        # One uniform draw per request picks at most one of these faults, so the shares
        # are slices of [0, 1) and cannot add up to more than 1.
        request_fault_share = self.error_share + self.reset_share + self.throttle_share
        if request_fault_share > 1.0:
            raise ValueError(
                f"invalid fault shares: error {self.error_share} + reset {self.reset_share} "
                f"+ throttle {self.throttle_share} = {request_fault_share}, expected <= 1"
            )

        if not self.error_statuses:
            raise ValueError("invalid error_statuses: expected at least one status")
        for status in self.error_statuses:
            if not 500 <= status <= 599:
                raise ValueError(f"invalid error status {status}: expected a 5xx status")

        if self.retry_after_s < 0:
            raise ValueError(f"invalid retry_after_s {self.retry_after_s}: expected >= 0")
        if self.change not in CHANGE_MODES:
            raise ValueError(f"invalid change mode {self.change!r}: expected one of {CHANGE_MODES}")
        if self.change_rows < 0 or self.change_max < 0:
            raise ValueError(
                f"invalid change_rows {self.change_rows} or change_max {self.change_max}: "
                "both must be >= 0"
            )

        unknown = sorted(set(self.endpoints) - set(ENDPOINTS))
        if unknown:
            raise ValueError(f"invalid fault endpoints {unknown}: expected some of {ENDPOINTS}")


@dataclass(frozen=True)
class StandInSettings:
    """Seed, rows per endpoint and faults of one stand-in server."""

    seed: int = 42
    tracks: int = 1000
    users: int = 1000
    listen_history: int = 1000
    faults: FaultSettings = field(default_factory=FaultSettings)

    def __post_init__(self) -> None:
        for name in ENDPOINTS:
            count = getattr(self, name)
            if count < 0:
                raise ValueError(f"invalid row count {name}={count}: expected >= 0")

        # Every listening record names one existing user and existing tracks.
        if self.listen_history > 0 and (self.tracks == 0 or self.users == 0):
            raise ValueError(
                f"invalid row counts: listen_history={self.listen_history} needs "
                f"tracks > 0 and users > 0, got tracks={self.tracks} users={self.users}"
            )

    def with_faults(self, **changes: Any) -> StandInSettings:
        """Return a copy with the given `FaultSettings` fields replaced."""
        return replace(self, faults=replace(self.faults, **changes))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StandInSettings:
        """Build settings from `STAND_IN_*` variables, defaults for the unset ones."""
        environ = os.environ if environ is None else environ
        values = {
            name: parse_value(name, raw)
            for name in SETTING_NAMES
            if (raw := environ.get(env_name(name))) not in (None, "")
        }
        return cls.from_values(values)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> StandInSettings:
        """Build settings from a flat mapping of `SETTING_NAMES` to parsed values."""
        top_names = {item.name for item in fields(cls)} - {"faults"}
        top = {name: value for name, value in values.items() if name in top_names}
        fault_values = {name: value for name, value in values.items() if name not in top_names}
        return cls(**top, faults=FaultSettings(**fault_values))


def parse_int_list(raw: str) -> tuple[int, ...]:
    return tuple(int(part) for part in raw.split(",") if part.strip())


def parse_name_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


# Parsers of the flat setting names, shared by the environment reader and the CLI.
SETTING_PARSERS: dict[str, Any] = {
    "seed": int,
    "tracks": int,
    "users": int,
    "listen_history": int,
    "latency_ms": float,
    "latency_jitter_ms": float,
    "error_share": float,
    "error_statuses": parse_int_list,
    "reset_share": float,
    "throttle_share": float,
    "retry_after_s": int,
    "change": str,
    "change_rows": int,
    "change_max": int,
    "dirty_share": float,
    "endpoints": parse_name_list,
}
SETTING_NAMES = tuple(SETTING_PARSERS)


def env_name(setting_name: str) -> str:
    """Return the environment variable of a setting, e.g. `STAND_IN_LATENCY_MS`."""
    if setting_name == "endpoints":
        return f"{ENV_PREFIX}FAULT_ENDPOINTS"
    return f"{ENV_PREFIX}{setting_name.upper()}"


def parse_value(setting_name: str, raw: str) -> Any:
    try:
        return SETTING_PARSERS[setting_name](raw)
    except ValueError as error:
        raise ValueError(
            f"invalid {setting_name} {raw!r} (flag or {env_name(setting_name)}): {error}"
        ) from error
