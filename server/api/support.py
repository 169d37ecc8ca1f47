"""The support API (`/api/v1/tenants/{tenant_id}/support`): the handoff queue and its actions.

Support agents (and tenant and platform admins) see the conversations a person has, claim one
(two people cannot), read its history, memories and why it came to them, reply on WhatsApp
through the outbox, and hand it back to the assistant or close it. Actions on the LangGraph
thread (hand back, take over) run as jobs on the conversation's lock; the API answers 202.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Response
from pydantic import Field

from channels.policy import window_open
from channels.templates import TEMPLATE_MAX_CHARS, render
from server.api._resource import RULES, Strict, not_found, scoped, services_of
from server.api.auth import Principal, Role, require_roles
from server.api.errors import ERROR_RESPONSES, ApiError
from server.jobs.queue import enqueue_send, enqueue_support_job
from server.jobs.templating import TemplateUnavailable, closed_window_send, has_approved
from server.services import Services
from store import conversations, inbox, outbox, support, tenants
from store import templates as templates_store
from store.records import Message, Tenant, User
from store.scoping import tenant_scope

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

SUPPORT = frozenset({Role.platform_admin, Role.tenant_admin, Role.support_agent})
Staff = Annotated[Principal, Depends(require_roles(*sorted(SUPPORT)))]
ServicesDep = Annotated[Services, Depends(services_of)]
BASE = "/tenants/{tenant_id}/support"
ITEM = BASE + "/conversations/{item_id}"


def _rule(method: str, path: str) -> str:
    RULES[(method, path)] = SUPPORT
    return path


class ReplyBody(Strict):
    """A message from staff to the user."""

    text: str = Field(min_length=1, max_length=4000)
    use_template: bool = Field(
        default=False,
        description="Outside WhatsApp's 24-hour window, send it as the tenant's approved "
        "'staff_followup' template, with `text` as its `text` variable.",
    )


class NoteBody(Strict):
    """An optional note that goes with the action (kept on the transition)."""

    note: str = Field(default="", max_length=1000)


class TakeOverBody(Strict):
    """Why staff take an active conversation over."""

    reason: str = Field(min_length=3, max_length=1000)


@router.get(_rule("GET", BASE + "/queue"), tags=["support"], summary="The handoff queue")
def queue(tenant_id: UUID, principal: Staff, services: ServicesDep) -> dict[str, Any]:
    """Conversations a person has, oldest handoff first, with waiting time and reason."""
    with scoped(services, principal, tenant_id, "read the support queue") as conn:
        rows = support.handoff_queue(conn, tenant_id)
    return {"items": rows}


@router.get(_rule("GET", ITEM), tags=["support"], summary="A conversation, for staff")
def conversation(
    tenant_id: UUID, item_id: UUID, principal: Staff, services: ServicesDep
) -> dict[str, Any]:
    """The history (with voice-note transcripts), memories, and the route that led here."""
    with scoped(services, principal, tenant_id, "read a conversation") as conn:
        head = _conversation(conn, tenant_id, item_id)
        messages = support.messages_for_staff(conn, item_id)
        memories = support.user_memories(conn, tenant_id, head["user_id"])
        routed = support.handoff_run(conn, item_id)
        history = conversations.transitions(conn, item_id)
        template = _template_available(conn, tenant_id)
    return {
        **head,
        "window_open": window_open(head["last_inbound_at"]),
        "template_available": template,
        "messages": messages,
        "memories": memories,
        "handoff_run": routed,
        "transitions": history,
    }


def _conversation(conn: Any, tenant_id: UUID, item_id: UUID) -> dict[str, Any]:
    row = support.conversation_head(conn, tenant_id, item_id)
    if row is None:
        raise not_found("conversation")
    return dict(row)


def _template_available(conn: Any, tenant_id: UUID) -> bool:
    """Whether the tenant has an approved 'staff_followup' template for a closed window."""
    tenant = tenants.tenant_by_id(conn, tenant_id)
    return tenant is not None and has_approved(conn, tenant, "staff")


def _window_closed(conn: Any, tenant_id: UUID) -> str:
    if _template_available(conn, tenant_id):
        offer = (
            "send it with `use_template: true` to send your words inside the tenant's "
            "approved 'staff_followup' template"
        )
    else:
        offer = (
            "the tenant has no approved 'staff_followup' template, so only the user can "
            "reopen it (a tenant admin can register one under /templates)"
        )
    return (
        "The user's last message is over 24 hours old: WhatsApp only delivers a template "
        f"now; {offer}."
    )


def _check_template(conn: Any, tenant: Tenant, user: User, message: Message) -> None:
    """Refuse, now rather than at send time, a reply its template cannot carry."""
    try:
        send = closed_window_send(conn, tenant, user, message)
    except TemplateUnavailable as exc:
        raise ApiError(409, "template_unavailable", exc.reason) from exc
    approved = templates_store.approved_for(conn, tenant.id, send.purpose)
    template = next((t for t in approved if t.content_sid == send.content_sid), None)
    length = len(render(template.body, send.content_variables)) if template else 0
    if length > TEMPLATE_MAX_CHARS:
        raise ApiError(
            422, "too_long_for_template",
            f"Sent in the '{send.purpose}' template your reply would be {length} characters; "
            f"WhatsApp takes at most {TEMPLATE_MAX_CHARS} in a template. Shorten the text by "
            f"{length - TEMPLATE_MAX_CHARS} characters or more.",
        )  # fmt: skip


def _conflict(exc: conversations.TransitionError | conversations.ClaimConflict) -> ApiError:
    if isinstance(exc, conversations.ClaimConflict):
        return ApiError(409, "already_claimed", str(exc))
    if exc.current is None:
        return not_found("conversation")
    return ApiError(409, "wrong_state", str(exc))


@router.post(_rule("POST", ITEM + "/claim"), tags=["support"], summary="Claim a conversation")
def claim(
    tenant_id: UUID, item_id: UUID, principal: Staff, services: ServicesDep
) -> dict[str, Any]:
    """Take the conversation; a second person gets 409 `already_claimed`."""
    with scoped(services, principal, tenant_id, "claim a conversation") as conn:
        _conversation(conn, tenant_id, item_id)
        try:
            handoff = conversations.claim(conn, item_id, principal.subject)
        except (conversations.TransitionError, conversations.ClaimConflict) as exc:
            raise _conflict(exc) from exc
    return {"id": str(handoff.id), "state": handoff.state, "claimed_by": handoff.claimed_by,
            "claimed_at": handoff.claimed_at}  # fmt: skip


@router.post(
    _rule("POST", ITEM + "/reply"), tags=["support"], status_code=202, summary="Reply as staff"
)
def reply(
    tenant_id: UUID,
    item_id: UUID,
    body: ReplyBody,
    principal: Staff,
    services: ServicesDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, Any]:
    """Send `text` to the user through the outbox (the same key sends once).

    Outside WhatsApp's window it goes only with `use_template`, inside the tenant's approved
    'staff_followup' template: a template that cannot carry it is a 409 with the reason, words
    that would make it too long a 422, and then nothing is written."""
    key = f"staff:{item_id}:{idempotency_key or secrets.token_hex(12)}"
    with scoped(services, principal, tenant_id, "reply as staff") as conn:
        head = _conversation(conn, tenant_id, item_id)
        try:  # replying claims the conversation (a refusal rolls the claim back)
            conversations.claim(conn, item_id, principal.subject)
        except (conversations.TransitionError, conversations.ClaimConflict) as exc:
            raise _conflict(exc) from exc
        closed = not window_open(head["last_inbound_at"])
        if closed and not body.use_template:
            raise ApiError(409, "window_closed", _window_closed(conn, tenant_id))
        user = tenants.user_by_id(conn, head["user_id"])
        tenant = tenants.tenant_by_id(conn, tenant_id)
        assert user is not None and tenant is not None
        message = outbox.insert_outbound(
            conn, tenant_id=tenant_id, conversation_id=item_id, idempotency_key=key,
            body=body.text, from_address=tenant.whatsapp_sender, to_address=user.address,
            correlation_id=f"staff-{secrets.token_hex(8)}", purpose="staff",
            sent_by=principal.subject,
            template_variables={"text": body.text, "agent": principal.subject.split("@")[0]},
        )  # fmt: skip
        if closed:  # a refusal here rolls the message and the claim back
            _check_template(conn, tenant, user, message)
        conversations.transition(
            conn, item_id, "WAITING_USER", actor_kind="staff", actor=principal.subject,
            reason="Staff replied.",
        )  # fmt: skip
    if message.status == "pending" and message.enqueued_at is None:
        # After the commit, so the send job finds the row; the relay would send it otherwise.
        enqueue_send(services.redis, message)
        with services.pool.connection() as conn, tenant_scope(conn, tenant_id):
            inbox.mark_enqueued(conn, [message.id])
    return {"message_id": message.id, "status": message.status}


@router.post(
    _rule("POST", ITEM + "/hand-back"), tags=["support"], status_code=202,
    summary="Hand back to the assistant",
)  # fmt: skip
def hand_back(
    tenant_id: UUID, item_id: UUID, body: NoteBody, principal: Staff, services: ServicesDep
) -> dict[str, str]:
    """Resume the paused graph (a job); the assistant answers the user's next message."""
    return _queue_job(
        services, principal, tenant_id, item_id, "hand_back", body.note, conversations.WITH_STAFF
    )


def _queue_job(
    services: Services, principal: Principal, tenant_id: UUID, item_id: UUID, job: str,
    text: str, states: tuple[str, ...],
) -> dict[str, str]:  # fmt: skip
    """Queue the support job `job` on the conversation, if it is in one of `states`."""
    action = job.replace("_", " ")
    with scoped(services, principal, tenant_id, f"{action} a conversation") as conn:
        head = _conversation(conn, tenant_id, item_id)
        if head["state"] not in states:
            raise ApiError(409, "wrong_state", f"The conversation is {head['state']}.")
    cid = f"{job}-{secrets.token_hex(8)}"
    queued = enqueue_support_job(
        services.redis, services.settings, job, str(tenant_id), str(item_id),
        principal.subject, text, cid, cid=cid, description=f"{action} {item_id}",
    )  # fmt: skip
    return {"job_id": queued.id, "status": "queued"}


@router.post(
    _rule("POST", ITEM + "/take-over"), tags=["support"], status_code=202,
    summary="Take an active conversation over",
)  # fmt: skip
def take_over(
    tenant_id: UUID, item_id: UUID, body: TakeOverBody, principal: Staff, services: ServicesDep
) -> dict[str, str]:
    """Pause the assistant on this conversation and give it to the caller (a job)."""
    return _queue_job(
        services, principal, tenant_id, item_id, "take_over", body.reason, ("ACTIVE",)
    )


@router.post(
    _rule("POST", ITEM + "/close"), tags=["support"], status_code=204,
    summary="Close a conversation",
)  # fmt: skip
def close(
    tenant_id: UUID, item_id: UUID, body: NoteBody, principal: Staff, services: ServicesDep
) -> Response:
    """End the conversation; the user's next message opens a new one."""
    with scoped(services, principal, tenant_id, "close a conversation") as conn:
        _conversation(conn, tenant_id, item_id)
        try:
            conversations.transition(
                conn, item_id, "CLOSED", actor_kind="staff", actor=principal.subject,
                reason=body.note or "Closed by staff.",
            )  # fmt: skip
        except conversations.TransitionError as exc:
            raise _conflict(exc) from exc
    return Response(status_code=204)
