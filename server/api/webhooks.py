"""Twilio's webhooks: inbound WhatsApp messages and delivery status callbacks.

Both are signed by Twilio with the tenant's auth token over `PUBLIC_BASE_URL` + path. The inbound
webhook validates, stores (one statement) and acknowledges in milliseconds; the relay
(`server.relay`) enqueues the turn. The status callback moves an outbound message's status
forward, never back.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from typing import Annotated
from urllib.parse import parse_qsl

import psycopg
import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from psycopg_pool import PoolTimeout
from starlette.types import ASGIApp, Receive, Scope, Send
from twilio.twiml.messaging_response import MessagingResponse

from channels.twilio.inbound import (
    InboundMessage,
    InvalidInboundError,
    is_valid_signature,
    parse_inbound,
)
from server import metrics
from server.api.errors import ApiError, error_response
from server.logs import bind_correlation_id, new_correlation_id
from server.services import Services
from store import inbox, outbox
from store.records import Message, Tenant
from store.scoping import tenant_scope

log = structlog.get_logger(__name__)
router = APIRouter(tags=["webhooks"])

EMPTY_TWIML = str(MessagingResponse())
TWILIO_STATUSES = frozenset(
    {"accepted", "scheduled", "queued", "sending", "sent", "delivered", "read", "undelivered",
     "failed", "canceled"}
)  # fmt: skip
_UNAVAILABLE = (psycopg.OperationalError, PoolTimeout)
_RESPONSES = {
    400: {"description": "Not a form Twilio would send"},
    403: {"description": "Missing or wrong X-Twilio-Signature"},
    404: {"description": "No tenant owns the sender"},
    413: {"description": "The form is larger than Twilio ever sends"},
    503: {"description": "The database is unavailable; Twilio may retry"},
}


INBOUND_PATH = "/webhooks/inbound"
MAX_FORM_BYTES = 128 * 1024
"""Twilio's forms are a few kB (a 1,600-character body, ten media URLs); more is not Twilio."""


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


def _twiml() -> Response:
    return Response(content=EMPTY_TWIML, media_type="text/xml")


def _unavailable(exc: Exception) -> ApiError:
    log.error("database unavailable", error=str(exc))
    return ApiError(
        503, "database_unavailable", "The database is unavailable; try again shortly.", retry=5
    )


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


def _parse_form(content_type: str | None, body: bytes) -> dict[str, str]:
    """Parse Twilio's URL-encoded form (the last value wins for a repeated field)."""
    if (content_type or "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise ApiError(400, "invalid_form", "The body must be application/x-www-form-urlencoded.")
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "invalid_form", "The form is not valid UTF-8 URL encoding.") from exc


@dataclass(frozen=True)
class WebhookRequest:
    """What the webhooks read of an HTTP request, whichever way it arrived."""

    path: str
    query: str
    content_type: str | None
    signature: str | None
    body: bytes

    @classmethod
    async def of(cls, scope: Scope, receive: Receive) -> WebhookRequest:
        """Read an ASGI request (`InboundFastPath`'s, or a route's `request.scope`)."""
        headers = dict(scope["headers"])

        def header(name: bytes) -> str | None:
            value = headers.get(name)
            return value.decode("latin-1") if value is not None else None

        return cls(
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            content_type=header(b"content-type"),
            signature=header(b"x-twilio-signature"),
            body=await read_body(receive),
        )


async def _signed_form(
    services: Services, request: WebhookRequest, sender_field: str
) -> tuple[Tenant, dict[str, str]]:
    """Parse the form, find the tenant by its sender, and check Twilio's signature."""
    form = _parse_form(request.content_type, request.body)
    sender = (form.get(sender_field) or "").strip()
    if not sender:
        raise ApiError(
            400, "invalid_message", f"The form has no {sender_field}; Twilio always sends one."
        )
    try:
        tenant = services.tenants.cached(sender) or await run_in_threadpool(
            services.tenants.by_sender, sender
        )
    except _UNAVAILABLE as exc:
        raise _unavailable(exc) from exc
    if tenant is None:
        raise ApiError(404, "unknown_sender", f"No tenant uses the WhatsApp sender {sender}.")
    structlog.contextvars.bind_contextvars(tenant=tenant.slug)
    url = services.settings.public_url(request.path)
    if request.query:
        url += "?" + request.query
    if not is_valid_signature(tenant.twilio_auth_token, url, form, request.signature):
        log.warning(
            "rejected webhook: bad signature", has_signature=bool(request.signature), url=url
        )
        raise ApiError(403, "invalid_signature", "X-Twilio-Signature is missing or wrong.")
    return tenant, _without_nul(form)


def _without_nul(form: dict[str, str]) -> dict[str, str]:
    """The form with NUL characters taken out, once the signature (over what was sent) holds:
    PostgreSQL's text and jsonb cannot hold NUL, and no WhatsApp message needs one."""
    if not any("\x00" in key or "\x00" in value for key, value in form.items()):
        return form
    log.info("removed NUL characters from a signed form")
    return {key.replace("\x00", ""): value.replace("\x00", "") for key, value in form.items()}


async def _store(
    services: Services, tenant: Tenant, inbound: InboundMessage, cid: str
) -> Message | None:
    """Store the message with its user and conversation (None for a replay)."""
    pool = services.webhook_pool
    assert pool is not None, "the app opens the webhook's pool in its lifespan"
    try:
        async with pool.connection() as conn:
            return await inbox.store_inbound_async(
                conn,
                tenant_id=tenant.id,
                wa_id=inbound.wa_id,
                profile_name=inbound.profile_name,
                provider_sid=inbound.message_sid,
                kind=inbound.kind,
                body=inbound.body,
                from_address=inbound.from_address,
                to_address=inbound.to_address,
                media=[asdict(m) for m in inbound.media],
                payload=inbound.raw,
                correlation_id=cid,
                enroll=tenant.auto_enroll,
            )
    except psycopg.errors.ForeignKeyViolation as exc:
        # The tenant was deleted by another API process after this one cached it.
        services.tenants.forget()
        raise ApiError(404, "unknown_sender", f"No tenant uses {inbound.to_address}.") from exc
    except _UNAVAILABLE as exc:
        raise _unavailable(exc) from exc


async def accept_inbound(services: Services, read: Awaitable[WebhookRequest]) -> Response:
    """Read, validate, store and acknowledge one inbound message; errors become their body."""
    cid = new_correlation_id()
    bind_correlation_id(cid)
    try:
        with _Observed("inbound", ok="accepted") as seen:
            tenant, form = await _signed_form(services, await read, "To")
            try:
                inbound = parse_inbound(form)
            except InvalidInboundError as exc:
                raise ApiError(400, "invalid_message", str(exc)) from exc
            structlog.contextvars.bind_contextvars(message_sid=inbound.message_sid)
            message = await _store(services, tenant, inbound, cid)
            if message is None:
                log.info("duplicate MessageSid acknowledged and dropped")
                seen.outcome = "duplicate"
                return _twiml()
    except ApiError as exc:
        return error_response(exc)
    services.due.set()  # the relay enqueues it now rather than at its next tick
    log.info("inbound stored", message_id=message.id, kind=inbound.kind)
    return _twiml()


class InboundFastPath:
    """ASGI middleware that answers `POST /webhooks/inbound` itself, ahead of the router.

    The webhook is the one hot path: Twilio posts every message there and waits for the ack.
    Answering it here skips routing, dependency injection and the thread pool (the statement
    runs on the event loop, through `Services.webhook_pool`), which roughly halves its CPU.
    Everything else goes on to the app; the route below documents the webhook in OpenAPI and
    runs the same `accept_inbound` when the router is used without this middleware.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != INBOUND_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        services = scope["app"].state.services
        response = await accept_inbound(services, WebhookRequest.of(scope, receive))
        await response(scope, receive, send)


@router.post(
    INBOUND_PATH,
    response_class=Response,
    responses={200: {"content": {"text/xml": {}}, "description": "Accepted (or a replay)"}}
    | _RESPONSES,
)
async def inbound_webhook(request: Request, services: ServicesDep) -> Response:
    """Accept one WhatsApp message from Twilio (a `MessageSid` seen before is dropped)."""
    return await accept_inbound(services, WebhookRequest.of(request.scope, request.receive))


def _apply_status(
    services: Services, tenant: Tenant, sid: str, status: str, code: int | None
) -> bool:
    with services.pool.connection() as conn, tenant_scope(conn, tenant.id):
        return outbox.apply_status(conn, tenant.id, sid, status, code)


@router.post("/webhooks/status", status_code=204, responses=_RESPONSES)
async def status_callback(request: Request, services: ServicesDep) -> Response:
    """Record a delivery status Twilio reports for one of our messages."""
    bind_correlation_id(new_correlation_id())
    with _Observed("status", ok="recorded"):
        tenant, form = await _signed_form(
            services, await WebhookRequest.of(request.scope, request.receive), "From"
        )
        sid = (form.get("MessageSid") or "").strip()
        status = (form.get("MessageStatus") or form.get("SmsStatus") or "").strip().lower()
        if not sid:
            raise ApiError(400, "invalid_status", "The form has no MessageSid.")
        if status not in TWILIO_STATUSES:
            raise ApiError(400, "invalid_status", f"Unknown MessageStatus {status!r}.")
        raw_code = (form.get("ErrorCode") or "").strip()
        if raw_code and not raw_code.isdigit():
            raise ApiError(400, "invalid_status", "ErrorCode must be a number.")
        code = int(raw_code) if raw_code else None
        try:
            applied = await run_in_threadpool(_apply_status, services, tenant, sid, status, code)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
    log.info("delivery status", provider_sid=sid, status=status, error_code=code, applied=applied)
    metrics.observe_delivery_status(status, code)
    return Response(status_code=204)
