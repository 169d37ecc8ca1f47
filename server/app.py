"""The FastAPI application: webhook, health, and (later) the management and support APIs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from server.api.budgets import router as budgets_router
from server.api.console import router as console_router
from server.api.data_rights import router as data_rights_router
from server.api.errors import install_error_handlers
from server.api.health import readiness, ready
from server.api.routes import router as api_router
from server.api.support import router as support_router
from server.api.templates import router as templates_router
from server.api.webhooks import InboundFastPath
from server.api.webhooks import router as webhooks_router
from server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from server.metrics_scrape import ApiMetrics
from server.relay import RelayProcess
from server.services import Services
from server.settings import QUEUES, Settings
from store.migrate import ping

log = structlog.get_logger(__name__)


def create_app(settings: Settings, *, relay: bool = True) -> FastAPI:
    """Build the API for resolved `settings` (DATABASE_URL and REDIS_URL set).

    `relay=False` leaves stored messages for someone else to enqueue (tests do it by hand).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services.build(settings)
        await services.open_webhook_pool()
        app.state.services = services
        app.state.metrics = ApiMetrics(services.redis, services.pool, QUEUES)
        background = RelayProcess(settings) if relay else None
        if background:
            background.start()
            services.due = background  # the webhook wakes the relay process
        log.info("api started", public_base_url=settings.public_base_url)
        try:
            yield
        finally:
            if background:
                background.stop()
            await services.close_webhook_pool()
            services.close()

    app = FastAPI(
        title="Conversa",
        summary="A multi-tenant WhatsApp AI assistant service built on LangGraph.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(InboundFastPath)
    app.include_router(webhooks_router)
    app.include_router(api_router)
    app.include_router(budgets_router)
    app.include_router(support_router)
    app.include_router(templates_router)
    app.include_router(data_rights_router)
    app.include_router(console_router)

    @app.get("/livez", tags=["health"])
    @app.get("/healthz", tags=["health"])
    async def livez() -> dict[str, str]:
        """Answer while the process is alive; touches nothing else (the benchmarks' baseline).
        `/readyz` checks the backends."""
        return {"status": "alive"}

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> JSONResponse:
        """Report whether PostgreSQL and Redis answer and the migrations are at head."""
        services: Services = request.app.state.services
        checks = await run_in_threadpool(_check, services)
        ok = ready(checks)
        return JSONResponse({"status": "ok" if ok else "degraded", **checks}, 200 if ok else 503)

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus metrics: webhooks, queues and the handoff queue (see the README)."""
        body = await run_in_threadpool(request.app.state.metrics.render)
        return Response(body, media_type=METRICS_CONTENT_TYPE)

    return app


def app_from_env() -> FastAPI:
    """Build the API from the environment (for `uvicorn --factory` and multi-process serving)."""
    from server.logs import configure_logging
    from server.settings import get_settings

    settings = get_settings()
    configure_logging(settings.app_env, settings.log_level)
    return create_app(settings)


def _check(services: Services) -> dict[str, str]:
    def postgres() -> None:
        with services.pool.connection(timeout=2) as conn:
            ping(conn)

    assert services.settings.database_url
    return readiness(services.settings.database_url, postgres, services.redis)
