"""The MooVitamix API as a Dagster resource: a real URL, or the bundled stand-in by default."""

import contextlib
import os

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from etl_assets.resources.api_client import MAX_PAGE_SIZE, ApiClient, ApiClientSettings, redact_url


class MoovitamixApi(ConfigurableResource):
    """The paginated MooVitamix API. With no base URL, the run serves the bundled stand-in on loopback."""

    base_url: str = Field(
        default_factory=lambda: os.environ.get("ETL_API_BASE_URL", ""),
        description="Root URL of the API, e.g. https://api.example.com. Defaults to $ETL_API_BASE_URL; "
        "empty starts the bundled stand-in (seeded fake data, STAND_IN_* settings) on 127.0.0.1 for the run.",
    )
    page_size: int = Field(default=MAX_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Rows per page, 1 to 100.")
    timeout_seconds: float = Field(default=30.0, gt=0, description="Connect and read timeout of one request, in seconds.")
    max_attempts: int = Field(default=6, ge=1, description="Attempts per page, the first included, before the asset fails.")
    backoff_seconds: float = Field(
        default=0.5, ge=0, description="Base of the exponential backoff between attempts, in seconds; jitter adds up to as much."
    )
    max_backoff_seconds: float = Field(default=30.0, gt=0, description="Maximum wait between two attempts, in seconds.")
    deadline_seconds: float = Field(
        default=600.0, gt=0, description="Time budget for one page across all its attempts, in seconds."
    )

    _stand_in: contextlib.ExitStack | None = PrivateAttr(default=None)
    _resolved_url: str = PrivateAttr(default="")

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._resolved_url = self.base_url
        if self.base_url:
            context.log.info(f"Reading the MooVitamix API at {redact_url(self.base_url)}")
            return

        # Imported here so that a deployment against a real API never loads the stand-in.
        from etl_assets.stand_in_api.server import serve_in_thread
        from etl_assets.stand_in_api.settings import StandInSettings

        self._stand_in = contextlib.ExitStack()
        server = self._stand_in.enter_context(serve_in_thread(StandInSettings.from_env()))
        self._resolved_url = server.base_url
        context.log.info(f"No ETL_API_BASE_URL set: serving the bundled stand-in API at {server.base_url} for this run")

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._stand_in is not None:
            self._stand_in.close()
            self._stand_in = None

    def client_settings(self) -> ApiClientSettings:
        return ApiClientSettings(
            base_url=self._resolved_url or self.base_url,
            page_size=self.page_size,
            timeout_seconds=self.timeout_seconds,
            max_attempts=self.max_attempts,
            backoff_seconds=self.backoff_seconds,
            max_backoff_seconds=self.max_backoff_seconds,
            deadline_seconds=self.deadline_seconds,
        )

    def client(self) -> ApiClient:
        return ApiClient(self.client_settings())
