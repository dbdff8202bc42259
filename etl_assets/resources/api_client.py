"""The HTTP client of the MooVitamix API: one keep-alive session per thread, retries, paging.

Free of Dagster so that Ray workers can import it cheaply.
"""

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

logger = logging.getLogger(__name__)

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_PAGE_SIZE = 100


def redact_url(url: str) -> str:
    """Drop credentials and query values from a URL so it can be logged."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    if parts.username or parts.password:
        netloc = f"***@{netloc}"
    query = "&".join(f"{pair.split('=', 1)[0]}=***" for pair in parts.query.split("&") if pair)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@dataclass(frozen=True)
class ApiClientSettings:
    """Everything a worker needs to call the API; plain data so Ray can ship it."""

    base_url: str
    page_size: int = MAX_PAGE_SIZE
    timeout_seconds: float = 30.0
    max_attempts: int = 6
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    deadline_seconds: float = 600.0

    def __post_init__(self) -> None:
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page size {self.page_size} is invalid: the API accepts 1 to {MAX_PAGE_SIZE}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts {self.max_attempts} is invalid: it must be at least 1")


@dataclass
class PageResult:
    endpoint: str
    page: int
    items: list[dict[str, Any]]
    total: int
    pages: int
    attempts: int
    retries: list[str] = field(default_factory=list)


class PageFetchError(RuntimeError):
    """A page could not be fetched; the message names the endpoint, page, last error and attempts."""


class RecordingRetry(Retry):
    """A urllib3 Retry that records every retry with its wait and stops at an overall deadline."""

    def __init__(self, *args: Any, label: str = "", events: list[str] | None = None, deadline: float = 0.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.label = label
        self.events = events if events is not None else []
        self.deadline = deadline

    def new(self, **kwargs: Any) -> "RecordingRetry":
        kwargs.setdefault("label", self.label)
        kwargs.setdefault("events", self.events)
        kwargs.setdefault("deadline", self.deadline)
        return super().new(**kwargs)

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if self.deadline and time.monotonic() > self.deadline:
            reason = error or RuntimeError(f"overall deadline passed after HTTP {response.status if response else '?'}")
            raise MaxRetryError(_pool, url or "", reason)
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def sleep(self, response=None) -> None:
        retry_after = self.get_retry_after(response) if (response is not None and self.respect_retry_after_header) else None
        wait = retry_after if retry_after is not None else self.get_backoff_time()
        last = self.history[-1] if self.history else None
        cause = f"HTTP {last.status}" if last is not None and last.status else f"{type(last.error).__name__ if last and last.error else 'error'}"
        message = f"retrying {self.label} after {cause}: attempt {len(self.history) + 1}, waiting {wait:.2f} s"
        self.events.append(message)
        logger.warning(message)
        super().sleep(response)


class RequestGate(Protocol):
    """Admission of requests shared beyond one process; `release` reports whether the API throttled the request."""

    def acquire(self) -> None: ...

    def release(self, throttled: bool) -> None: ...


class ApiClient:
    """Fetches pages of one API with retries; a session per thread keeps connections alive."""

    def __init__(self, settings: ApiClientSettings, gate: RequestGate | None = None):
        self.settings = settings
        self.gate = gate
        self._local = threading.local()

    def _session(self) -> tuple[requests.Session, HTTPAdapter]:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
            self._local.adapter = adapter
        return session, self._local.adapter

    def _retry(self, label: str, events: list[str]) -> RecordingRetry:
        settings = self.settings
        return RecordingRetry(
            total=settings.max_attempts - 1,
            status_forcelist=RETRIED_STATUSES,
            allowed_methods=frozenset({"GET"}),
            backoff_factor=settings.backoff_seconds,
            backoff_max=settings.max_backoff_seconds,
            backoff_jitter=settings.backoff_seconds,
            respect_retry_after_header=True,
            raise_on_status=False,
            label=label,
            events=events,
            deadline=time.monotonic() + settings.deadline_seconds,
        )

    def fetch_page(self, endpoint: str, page: int, size: int | None = None) -> PageResult:
        """Fetch one page, retrying 429, 5xx, timeouts and resets; raise PageFetchError when spent."""
        size = size or self.settings.page_size
        label = f"/{endpoint} page {page}"
        url = f"{self.settings.base_url.rstrip('/')}/{endpoint}"
        events: list[str] = []

        # The session belongs to this thread, so setting the retry policy on its
        # adapter labels this request's retries without dropping the kept-alive connection.
        session, adapter = self._session()
        adapter.max_retries = self._retry(label, events)
        attempts = lambda: len(events) + 1  # noqa: E731

        if self.gate is not None:
            self.gate.acquire()
        try:
            response = session.get(url, params={"page": page, "size": size}, timeout=self.settings.timeout_seconds)
        except requests.RequestException as error:
            raise PageFetchError(
                f"fetching {label} from {redact_url(url)} failed after {attempts()} attempts: "
                f"{describe_error(error)}; check that the API is up and reachable, or raise max_attempts"
            ) from None
        finally:
            if self.gate is not None:
                self.gate.release(throttled=any("HTTP 429" in event for event in events))

        if response.status_code == 422:
            raise PageFetchError(
                f"/{endpoint} rejected page={page} size={size} with HTTP 422 ({response.text[:300]}); "
                f"page must be >= 1 and the page size must be 1-{MAX_PAGE_SIZE}"
            )
        if response.status_code != 200:
            raise PageFetchError(
                f"fetching {label} from {redact_url(url)} failed after {attempts()} attempts: "
                f"last status HTTP {response.status_code}; retry later or raise max_attempts"
            )

        body = parse_page_body(response, label)
        return PageResult(endpoint, page, body["items"], body["total"], body["pages"], attempts(), events)


def parse_page_body(response: requests.Response, label: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise PageFetchError(f"{label} returned a body that is not JSON: {response.text[:200]!r}") from None

    valid = (
        isinstance(body, dict)
        and isinstance(body.get("items"), list)
        and isinstance(body.get("total"), int)
        and isinstance(body.get("pages"), int)
    )
    if not valid:
        raise PageFetchError(f"{label} returned a body that is not a page object (items, total, pages): {str(body)[:200]}")
    return body


def describe_error(error: BaseException) -> str:
    """Name the root cause of a requests error without the URL noise urllib3 adds."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, MaxRetryError) and cause.reason is not None:
            cause = cause.reason
            continue
        if cause.__context__ is None and cause.__cause__ is None:
            break
        cause = cause.__cause__ or cause.__context__
    root = cause or error
    return f"{type(root).__name__}: {str(root)[:200]}"
