"""Twilio's webhooks: inbound WhatsApp messages and delivery status callbacks.

Both are signed by Twilio with the tenant's auth token over `PUBLIC_BASE_URL` + path. The inbound
webhook validates, stores (one statement) and acknowledges in milliseconds; the relay
(`server.relay`) enqueues the turn. The status callback moves an outbound message's status
forward, never back.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Annotated, Any
from urllib.parse import parse_qsl

import psycopg
import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from psycopg_pool import PoolTimeout
from starlette.requests import ClientDisconnect
from twilio.twiml.messaging_response import MessagingResponse

from channels.inbound import InboundMessage, InvalidInboundError, is_valid_signature, parse_inbound
from server import metrics
from server.errors import ApiError
from server.logs import bind_correlation_id, new_correlation_id
from server.services import Services
from store import repository as repo
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
    503: {"description": "The database is unavailable; Twilio may retry"},
}


def get_services(request: Request) -> Services:
    """Hand the app's shared services to a route."""
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


def _observed(
    webhook: str, ok: str
) -> Callable[[Callable[..., Awaitable[Response]]], Callable[..., Awaitable[Response]]]:
    """Count the webhook's requests and time them, by outcome: `ok`, what the handler put in
    `request.state.outcome`, or the error code answered."""

    def decorate(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
        @functools.wraps(handler)
        async def observed(request: Request, **kwargs: Any) -> Response:
            started, outcome = time.perf_counter(), "error"
            try:
                response = await handler(request, **kwargs)
                outcome = getattr(request.state, "outcome", ok)
                return response
            except ApiError as exc:
                outcome = exc.code
                raise
            finally:
                metrics.observe_webhook(webhook, outcome, time.perf_counter() - started)

        return observed

    return decorate


def _twiml() -> Response:
    return Response(content=EMPTY_TWIML, media_type="text/xml")


def _unavailable(exc: Exception) -> ApiError:
    log.error("database unavailable", error=str(exc))
    return ApiError(
        503, "database_unavailable", "The database is unavailable; try again shortly.", retry=5
    )


async def _signed_form(
    request: Request, services: Services, sender_field: str
) -> tuple[Tenant, dict[str, str]]:
    """Read the form, find the tenant by its sender, and check Twilio's signature."""
    form = await _read_form(request)
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
    url = services.settings.public_url(request.url.path)
    if request.url.query:
        url += "?" + request.url.query
    signature = request.headers.get("X-Twilio-Signature")
    if not is_valid_signature(tenant.twilio_auth_token, url, form, signature):
        log.warning("rejected webhook: bad signature", has_signature=bool(signature), url=url)
        raise ApiError(403, "invalid_signature", "X-Twilio-Signature is missing or wrong.")
    return tenant, form


async def _read_form(request: Request) -> dict[str, str]:
    """Parse Twilio's URL-encoded form (the last value wins for a repeated field)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise ApiError(400, "invalid_form", "The body must be application/x-www-form-urlencoded.")
    try:
        text = (await request.body()).decode("utf-8")
        return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=False))
    except ClientDisconnect as exc:  # nobody is left to answer; nothing was stored
        raise ApiError(400, "client_disconnected", "The client went away mid-request.") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "invalid_form", "The form is not valid UTF-8 URL encoding.") from exc


def _store(services: Services, tenant: Tenant, inbound: InboundMessage, cid: str) -> Message | None:
    """Store the message with its user and conversation (None for a replay)."""
    with services.pool.connection() as conn:
        return repo.store_inbound(
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


@router.post(
    "/webhooks/inbound",
    response_class=Response,
    responses={200: {"content": {"text/xml": {}}, "description": "Accepted (or a replay)"}}
    | _RESPONSES,
)
@_observed("inbound", ok="accepted")
async def inbound_webhook(request: Request, services: ServicesDep) -> Response:
    """Accept one WhatsApp message from Twilio (a `MessageSid` seen before is dropped)."""
    cid = new_correlation_id()
    bind_correlation_id(cid)
    tenant, form = await _signed_form(request, services, "To")
    try:
        inbound = parse_inbound(form)
    except InvalidInboundError as exc:
        raise ApiError(400, "invalid_message", str(exc)) from exc
    structlog.contextvars.bind_contextvars(message_sid=inbound.message_sid)
    try:
        message = await run_in_threadpool(_store, services, tenant, inbound, cid)
    except psycopg.errors.ForeignKeyViolation as exc:
        # The tenant was deleted by another API process after this one cached it.
        services.tenants.forget()
        raise ApiError(404, "unknown_sender", f"No tenant uses {inbound.to_address}.") from exc
    except _UNAVAILABLE as exc:
        raise _unavailable(exc) from exc
    if message is None:
        log.info("duplicate MessageSid acknowledged and dropped")
        request.state.outcome = "duplicate"
        return _twiml()
    services.due.set()  # the relay enqueues it now rather than at its next tick
    log.info("inbound stored", message_id=message.id, kind=inbound.kind)
    return _twiml()


def _apply_status(
    services: Services, tenant: Tenant, sid: str, status: str, code: int | None
) -> bool:
    with services.pool.connection() as conn, tenant_scope(conn, tenant.id):
        return repo.apply_status(conn, tenant.id, sid, status, code)


@router.post("/webhooks/status", status_code=204, responses=_RESPONSES)
@_observed("status", ok="recorded")
async def status_callback(request: Request, services: ServicesDep) -> Response:
    """Record a delivery status Twilio reports for one of our messages."""
    bind_correlation_id(new_correlation_id())
    tenant, form = await _signed_form(request, services, "From")
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
