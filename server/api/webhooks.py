"""The providers' webhooks: inbound WhatsApp messages and delivery statuses of ours.

Every provider in `channels.registry.PROVIDERS` contributes its paths. A post is read, its
tenant found by the sender it is addressed to, and its signature checked by that tenant's
channel before anything in it is believed. Messages are stored and acknowledged in
milliseconds, concurrent posts' messages committed together (`server.ack_batching`); the relay
(`server.relay`) enqueues the turn. A status moves an
outbound message's status forward, never back.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Annotated

import psycopg
import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from psycopg_pool import PoolTimeout
from starlette.types import ASGIApp, Receive, Scope, Send

from channels.base import (
    BadSignature,
    Channel,
    InboundMessage,
    InvalidRequest,
    NothingForUs,
    StatusUpdate,
    WebhookKind,
    WebhookRequest,
    Webhooks,
)
from channels.cloud.channel import WEBHOOK_PATH
from channels.cloud.inbound import verify_subscription
from channels.registry import PROVIDERS
from server import metrics
from server.ack_batching import NotCommitted
from server.api.errors import ApiError, error_response
from server.logs import bind_correlation_id, new_correlation_id
from server.services import Services
from store import outbox
from store.inbox import InboundFields
from store.records import Message, Tenant
from store.scoping import tenant_scope

log = structlog.get_logger(__name__)
router = APIRouter(tags=["webhooks"])

_UNAVAILABLE = (psycopg.OperationalError, PoolTimeout)
_RESPONSES = {
    400: {"description": "Not a post the provider would send"},
    403: {"description": "Missing or wrong signature"},
    404: {"description": "No tenant owns the sender"},
    413: {"description": "The post is larger than the provider ever sends"},
    503: {"description": "The database is unavailable; the provider may retry"},
}
MAX_FORM_BYTES = 128 * 1024
"""Twilio's forms are a few kB (a 1,600-character body, ten media URLs); more is not Twilio."""


@dataclass(frozen=True)
class Route:
    """One webhook path: whose it is and what it receives."""

    provider: str
    webhooks: Webhooks
    kind: WebhookKind


ROUTES: dict[str, Route] = {
    path: Route(name, provider.webhooks, kind)
    for name, provider in PROVIDERS.items()
    for path, kind in provider.webhooks.paths.items()
}
"""Every provider's webhook paths."""


def get_services(request: Request) -> Services:
    """Hand the app's shared services to a route."""
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


class _Observed:
    """Count a webhook request and time it, by outcome: `outcome` as the handler leaves it,
    or the code of the `ApiError` it raised, or `error`."""

    def __init__(self, webhook: str, ok: str) -> None:
        self.webhook, self.outcome, self.started = webhook, ok, time.perf_counter()

    def __enter__(self) -> _Observed:
        return self

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        if exc is not None:
            self.outcome = exc.code if isinstance(exc, ApiError) else "error"
        metrics.observe_webhook(self.webhook, self.outcome, time.perf_counter() - self.started)


def _unavailable(exc: Exception) -> ApiError:
    log.error("database unavailable", error=str(exc))
    return ApiError(
        503, "database_unavailable", "The database is unavailable; try again shortly.", retry=5
    )


def _unstorable(exc: psycopg.DataError) -> ApiError:
    """A 400, not a 5xx: the provider retries a 5xx, and the same post would fail again."""
    return ApiError(400, "invalid_value", f"A value in the form cannot be stored: {exc}")


async def read_body(receive: Receive, limit: int = MAX_FORM_BYTES) -> bytes:
    """Read a request body from the ASGI `receive` channel, refusing more than `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":  # nobody is left to answer; nothing stored
            raise ApiError(400, "client_disconnected", "The client went away mid-request.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "form_too_large", f"The form is over {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def read_request(services: Services, scope: Scope, receive: Receive) -> WebhookRequest:
    """Read an ASGI request (`InboundFastPath`'s, or a route's `request.scope`) as the provider
    signed it: at `PUBLIC_BASE_URL` + path (+ query)."""
    url = services.settings.public_url(scope["path"])
    query = scope.get("query_string", b"").decode("latin-1")
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    return WebhookRequest(
        url=f"{url}?{query}" if query else url, headers=headers, body=await read_body(receive)
    )


async def _verified(
    services: Services, route: Route, request: WebhookRequest
) -> tuple[Tenant, Channel]:
    """Find the tenant the post is addressed to, and its channel through the route's provider."""
    sender = route.webhooks.addressee(request, route.kind)
    try:
        tenant = services.tenants.cached(sender) or await run_in_threadpool(
            services.tenants.by_sender, sender
        )
    except _UNAVAILABLE as exc:
        raise _unavailable(exc) from exc
    if tenant is None or tenant.channel != route.provider:
        raise ApiError(404, "unknown_sender", f"No tenant uses the WhatsApp sender {sender[:80]}.")
    structlog.contextvars.bind_contextvars(tenant=tenant.slug)
    return tenant, PROVIDERS[route.provider].channel(services.settings, tenant)


async def _store(
    services: Services, tenant: Tenant, messages: tuple[InboundMessage, ...], cid: str
) -> list[Message | None]:
    """Store a post's messages with their users and conversations (None for a replay), through
    the group commit: answered once the transaction holding them has committed."""
    acks = services.acks
    assert acks is not None, "the app opens the webhook's pool in its lifespan"
    try:
        return await acks.store(
            [
                InboundFields(
                    tenant_id=tenant.id,
                    wa_id=inbound.wa_id,
                    profile_name=inbound.profile_name,
                    provider_message_id=inbound.provider_message_id,
                    kind=inbound.kind,
                    body=inbound.body,
                    from_address=inbound.sender,
                    to_address=inbound.recipient,
                    media=[asdict(m) for m in inbound.media],
                    payload=dict(inbound.payload),
                    correlation_id=cid,
                    choice=inbound.choice,
                    enroll=tenant.auto_enroll,
                )
                for inbound in messages
            ]
        )
    except psycopg.errors.ForeignKeyViolation as exc:
        # The tenant was deleted by another API process after this one cached it.
        services.tenants.forget()
        raise ApiError(404, "unknown_sender", f"No tenant uses {messages[0].recipient}.") from exc
    except psycopg.DataError as exc:  # a value the channel let through; a retry would fail too
        log.warning("inbound message refused by the database", error=str(exc))
        raise _unstorable(exc) from exc
    except NotCommitted as exc:
        log.error("inbound message not committed", error=str(exc))
        raise ApiError(
            503, "not_stored", "The message could not be stored; send it again shortly.", retry=5
        ) from exc
    except _UNAVAILABLE as exc:
        raise _unavailable(exc) from exc


def _apply_status(services: Services, tenant: Tenant, update: StatusUpdate) -> bool:
    with services.pool.connection() as conn, tenant_scope(conn, tenant.id):
        if update.outbox_id is not None and outbox.adopt_send(
            conn, tenant.id, update.outbox_id, update.provider_message_id
        ):
            log.warning("a send no worker recorded was reported by the provider; adopted it",
                        message_id=update.outbox_id)  # fmt: skip
        return outbox.apply_status(
            conn, tenant.id, update.provider_message_id, update.status, update.error_code
        )


async def _store_messages(
    services: Services, tenant: Tenant, messages: tuple[InboundMessage, ...], cid: str
) -> bool:
    """Store the messages; return whether any was new (else the post was a replay)."""
    structlog.contextvars.bind_contextvars(provider_message_id=messages[0].provider_message_id)
    stored = False
    for inbound, message in zip(
        messages, await _store(services, tenant, messages, cid), strict=True
    ):
        structlog.contextvars.bind_contextvars(provider_message_id=inbound.provider_message_id)
        if message is None:
            log.info("duplicate message acknowledged and dropped")
            continue
        stored = True
        log.info("inbound stored", message_id=message.id, kind=inbound.kind)
    return stored


async def _apply_statuses(
    services: Services, tenant: Tenant, statuses: tuple[StatusUpdate, ...]
) -> None:
    for update in statuses:
        try:
            applied = await run_in_threadpool(_apply_status, services, tenant, update)
        except psycopg.DataError as exc:
            log.warning("delivery status refused by the database", error=str(exc))
            raise _unstorable(exc) from exc
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
        log.info("delivery status", provider_message_id=update.provider_message_id,
                 status=update.status, error_code=update.error_code, applied=applied)  # fmt: skip
        metrics.observe_delivery_status(update.status, update.error_code)


async def accept(services: Services, route: Route, read: Awaitable[WebhookRequest]) -> Response:
    """Read, verify and act on one post; errors become their body."""
    cid = new_correlation_id()
    bind_correlation_id(cid)
    ok = "accepted" if route.kind == "inbound" else "recorded"
    try:
        with _Observed(route.kind, ok=ok) as seen:
            request = await read
            try:
                tenant, channel = await _verified(services, route, request)
                events = channel.parse(request, route.kind)
            except NothingForUs as exc:
                log.info("acknowledged a post with nothing for us", reason=str(exc))
                seen.outcome = "ignored"
                return _acknowledged(route)
            except InvalidRequest as exc:
                raise ApiError(400, exc.code, str(exc)) from exc
            except BadSignature as exc:
                log.warning("rejected webhook: bad signature", url=request.url)
                raise ApiError(403, "invalid_signature", str(exc)) from exc
            if events.messages:
                if await _store_messages(services, tenant, events.messages, cid):
                    services.due.set()  # the relay enqueues it now rather than at its next tick
                else:
                    seen.outcome = "duplicate"
            await _apply_statuses(services, tenant, events.statuses)
    except ApiError as exc:
        return error_response(exc)
    return _acknowledged(route)


def _acknowledged(route: Route) -> Response:
    """What the provider expects back for an accepted post."""
    reply = route.webhooks.reply(route.kind)
    return Response(content=reply.body, status_code=reply.status_code, media_type=reply.media_type)


class InboundFastPath:
    """ASGI middleware that answers the providers' webhook posts itself, ahead of the router.

    The inbound webhook is the one hot path: the provider posts every message there and waits
    for the ack. Answering it here skips routing, dependency injection and the thread pool (the
    group commit, `Services.acks`, runs on the event loop), which roughly halves its CPU.
    Everything else goes on to the app; the routes below document the webhooks in OpenAPI and
    run the same `accept` when the router is used without this middleware.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        services = scope["app"].state.services
        response = await accept(services, route, read_request(services, scope, receive))
        await response(scope, receive, send)


def _endpoint(route: Route) -> Callable[[Request, Services], Awaitable[Response]]:
    async def webhook(request: Request, services: ServicesDep) -> Response:
        return await accept(services, route, read_request(services, request.scope, request.receive))

    webhook.__doc__ = f"Accept a {route.provider} {route.kind} post (a replay is acknowledged)."
    return webhook


@router.get(
    WEBHOOK_PATH, response_class=Response, name="cloud_subscription",
    responses={200: {"description": "The challenge, echoed"},
               403: {"description": "Not a subscription check with our verify token"}},
)  # fmt: skip
def cloud_subscription(request: Request, services: ServicesDep) -> Response:
    """Answer Meta's webhook subscription check (`hub.mode=subscribe`, `hub.verify_token`,
    `hub.challenge`) when the token is `CLOUD_VERIFY_TOKEN`; unset, every check is refused."""
    token = services.settings.cloud_verify_token
    query = dict(request.query_params.items())
    challenge = verify_subscription(query, token.get_secret_value() if token else "")
    if challenge is None:
        log.warning("refused a Cloud API subscription check", mode=query.get("hub.mode"))
        refused = "hub.verify_token does not match CLOUD_VERIFY_TOKEN."
        return error_response(ApiError(403, "invalid_verify_token", refused))
    return Response(content=challenge, media_type="text/plain")


for _path, _route in ROUTES.items():
    _reply = _route.webhooks.reply(_route.kind)
    router.add_api_route(
        _path, _endpoint(_route), methods=["POST"], response_class=Response,
        status_code=_reply.status_code, name=f"{_route.provider}_{_route.kind}",
        responses=_RESPONSES,
    )  # fmt: skip
