"""The FastAPI app of the stand-in MooVitamix API."""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from .connection import ABORT_SCOPE_KEY, ConnectionAbortMiddleware
from .data import Tables, generate_tables
from .faults import FaultAction, FaultPlanner
from .schemas import ROW_MODELS, PageParams, ServedPage
from .settings import ENDPOINTS, StandInSettings
from .store import TableStore

logger = logging.getLogger(__name__)


def create_app(settings: StandInSettings, tables: Tables | None = None) -> FastAPI:
    """Build the app; generate the tables from `settings` unless `tables` is given.

    The app keeps `settings`, `store` (a `TableStore`) and `planner` (a
    `FaultPlanner`) in `app.state`.
    """
    if tables is None:
        tables = generate_tables(settings)

    app = StandInApp(title="MooVitamix API")
    app.state.settings = settings
    app.state.store = TableStore(tables, settings.seed, settings.faults)
    app.state.planner = FaultPlanner(settings.seed, settings.faults)

    @app.get("/", include_in_schema=False)
    async def redirect_to_docs() -> RedirectResponse:
        return RedirectResponse(url="/docs")

    for endpoint in ENDPOINTS:
        add_page_route(app, endpoint)

    @app.get("/_truth/{endpoint}", include_in_schema=False)
    async def read_truth(endpoint: str) -> JSONResponse:
        if endpoint not in ENDPOINTS:
            raise HTTPException(404, f"unknown table {endpoint!r}: expected one of {ENDPOINTS}")
        return JSONResponse(app.state.store.snapshot(endpoint))

    @app.get("/_defects", include_in_schema=False)
    async def read_defects() -> JSONResponse:
        return JSONResponse(app.state.store.defects)

    return app


class StandInApp(FastAPI):
    """FastAPI app whose outermost layer can reset connections."""

    def build_middleware_stack(self) -> Any:
        # Starlette's ServerErrorMiddleware wraps every add_middleware() layer and
        # replaces uvicorn's send, so the abort middleware goes outside the whole stack.
        return ConnectionAbortMiddleware(super().build_middleware_stack())


def add_page_route(app: FastAPI, endpoint: str) -> None:
    row_model = ROW_MODELS[endpoint]

    async def read_page(
        request: Request, params: Annotated[PageParams, Depends()]
    ) -> Response:
        return await serve_page(request, endpoint, params)

    app.add_api_route(
        f"/{endpoint}",
        read_page,
        methods=["GET"],
        response_model=ServedPage[row_model],
        name=f"read_{endpoint}",
        summary=f"Read one page of {endpoint.replace('_', ' ')}",
    )


async def serve_page(request: Request, endpoint: str, params: Any) -> Response:
    """Serve one page of `endpoint`, with the fault the planner decides for it."""
    app = request.app
    settings: StandInSettings = app.state.settings
    store: TableStore = app.state.store
    decision = app.state.planner.decide(endpoint, params.page, params.size)

    if decision.delay_s > 0:
        await asyncio.sleep(decision.delay_s)

    if decision.action is FaultAction.RESET:
        logger.info(
            "reset connection: %s page=%s size=%s attempt=%s",
            endpoint, params.page, params.size, decision.attempt,
        )
        await request.scope[ABORT_SCOPE_KEY]()
        # uvicorn drops this response because the connection is already closed.
        return Response(status_code=HTTPStatus.INTERNAL_SERVER_ERROR)

    if decision.action is FaultAction.ERROR:
        status = HTTPStatus(decision.status)
        logger.info(
            "injected %s: %s page=%s size=%s attempt=%s",
            status.value, endpoint, params.page, params.size, decision.attempt,
        )
        return JSONResponse({"detail": status.phrase}, status_code=status.value)

    if decision.action is FaultAction.THROTTLE:
        retry_after = settings.faults.retry_after_s
        logger.info(
            "throttled with Retry-After %s s: %s page=%s size=%s attempt=%s",
            retry_after, endpoint, params.page, params.size, decision.attempt,
        )
        return JSONResponse(
            {"detail": HTTPStatus.TOO_MANY_REQUESTS.phrase},
            status_code=HTTPStatus.TOO_MANY_REQUESTS,
            headers={"Retry-After": str(retry_after)},
        )

    raw = params.to_raw_params()
    if params.page > 1:
        store.change_before(endpoint, raw.offset, decision.rng)
    items, total = store.read_page(endpoint, raw.offset, raw.limit)

    # The page is returned as plain JSON, not through response_model, because a
    # response model would coerce or reject the dirty rows the faults ask for.
    page = ServedPage.create(items, params, total=total)
    return JSONResponse(page.model_dump())
