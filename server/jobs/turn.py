"""The `process_ai_response` job: answer a conversation's waiting messages, one turn at a time.

One run per conversation at a time, across any number of workers: the job takes the
conversation's advisory lock without waiting; a job that finds it taken returns at once, and the
holder picks its messages up (it looks again after letting go). Messages that arrive while a
turn runs, or inside the debounce window, are merged into the next turn in arrival order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import psycopg
import structlog
from redis import RedisError

from channels.choices import Choices, Option, make_choices
from channels.policy import NOTICES, is_data_request, is_opt_in, is_opt_out
from channels.registry import channel_for
from channels.splitting import split_body
from channels.typing import TypingIndicator
from graphs.context import Context
from graphs.features import FEATURES, HANDOFF, HUMAN_HANDOFF, LONG_TERM_MEMORY
from graphs.language import Language, detect_language, language_of_locale
from nodes.router import asks_for_human
from server import metrics
from server.budgets import BudgetExhausted, spender_for
from server.jobs import handoff, runner
from server.jobs.common import connect, final_attempt, redis_for
from server.jobs.memories import has_first_person_cue
from server.jobs.queue import enqueue_memory_extraction
from server.jobs.send import queue_next_send
from server.logs import bind_correlation_id
from server.settings import Settings, get_settings
from store import budgets, conversations, identity, inbox, outbox, tenants
from store import turns as store_turns
from store.cache import cached_profile, forget_user
from store.locks import conversation_lock, try_lock, unlock
from store.records import Conversation, Message, Tenant, User

log = structlog.get_logger(__name__)

Conn = psycopg.Connection[Any]


def process_ai_response(tenant_id: str, message_id: int, correlation_id: str) -> str:
    """Answer inbound message `message_id` and whatever else waits in its conversation."""
    settings = get_settings()
    bind_correlation_id(correlation_id, message_id=message_id, job="process_ai_response")
    with connect(settings, tenant_id) as conn:
        message = inbox.message_by_id(conn, message_id)
        if message is None or message.direction != "inbound":
            log.warning("no such inbound message; nothing to do")
            return "missing"
        if message.processed_at is not None:
            log.info("already answered")
            return "already answered"
        conversation = conversations.conversation_by_id(conn, message.conversation_id)
        assert conversation is not None
        lock, outcome = conversation_lock(conversation.id), "busy"
        while True:
            if not try_lock(conn, lock):
                log.info("another run holds the conversation; it will take this message")
                return outcome
            try:
                _debounce(conn, settings, conversation)
                while pending := inbox.unanswered_inbound(conn, conversation.id):
                    _answer(conn, settings, conversation, pending)
                    outcome = "answered"
            finally:
                unlock(conn, lock)
            # A message committed while we held the lock may have had its job turned away.
            if not inbox.unanswered_inbound(conn, conversation.id):
                return outcome


def _debounce(conn: Conn, settings: Settings, conversation: Conversation) -> None:
    """Wait while the user is still typing: until the newest message is `window` s old."""
    window, longest = settings.inbound_debounce_seconds, settings.inbound_debounce_max_seconds
    while window > 0:
        silence = store_turns.inbound_silence(conn, conversation.id)
        if silence is None:
            return
        quiet, waited = silence
        remaining = min(window - quiet, longest - waited)
        if remaining <= 0:
            return
        time.sleep(remaining)


@dataclass
class Turn:
    """One turn being answered: who it is for and the waiting messages it answers."""

    conn: Conn
    settings: Settings
    conversation: Conversation
    tenant: Tenant
    user: User
    pending: list[Message]
    language: Language

    @property
    def ids(self) -> list[int]:
        return [m.id for m in self.pending]

    @property
    def cid(self) -> str:
        """The turn's correlation id: its newest message's."""
        return self.pending[-1].correlation_id

    def close(self, status: str, reason: str) -> None:
        """Close the turn's messages without a reply, with the reason kept on them."""
        with self.conn.transaction():
            inbox.mark_processed(self.conn, self.ids, status, reason)

    def notify(self, notice: str, purpose: str = "notice") -> None:
        """Answer the turn with one of the channel's fixed notices (no model)."""
        self.finish([NOTICES[notice][self.language]], kind=notice, purpose=purpose)

    def finish(
        self, parts: list[str], *, kind: str, purpose: str, choices: Choices | None = None
    ) -> None:
        """Put the answer in the outbox and close the messages, atomically; then send. The
        last part offers `choices`, if any (its body: the same reply as numbered text)."""
        key = f"{kind}:{self.ids[0]}-{self.ids[-1]}"
        if choices is not None:
            parts = [*parts[:-1], choices.as_text()]
        with self.conn.transaction():
            outbox.insert_outbound_parts(
                self.conn, tenant=self.tenant, conversation_id=self.conversation.id,
                to_address=self.user.address, parts=parts, key=key, correlation_id=self.cid,
                purpose=purpose, choices=choices.to_json() if choices is not None else None,
            )  # fmt: skip
            inbox.mark_processed(self.conn, self.ids, "answered")
        log.info("turn answered", parts=len(parts), purpose=purpose)
        queue_next_send(self.conn, self.settings, self.conversation.id)


def _answer(
    conn: Conn, settings: Settings, conversation: Conversation, pending: list[Message]
) -> None:
    """Answer one turn: the waiting messages, merged, in arrival order."""
    tenant = tenants.tenant_by_id(conn, conversation.tenant_id)
    user = tenants.user_by_id(conn, conversation.user_id)
    assert tenant is not None and user is not None
    keyword, upto = _last_keyword(pending)
    # Answer up to a keyword now; what follows it is the next turn, under the new choice.
    pending = pending[:upto]
    turn = Turn(conn, settings, conversation, tenant, user, pending,
                _language(tenant, user, pending))  # fmt: skip
    bind_correlation_id(
        turn.cid, job="process_ai_response", tenant=tenant.slug,
        thread_id=conversation.thread_id, inbound_ids=turn.ids,
        inbound_correlation_ids=sorted({m.correlation_id for m in pending}),
    )  # fmt: skip

    opted_out = user.opted_out_at is not None
    if (keyword == "opt_out" and not opted_out) or (keyword == "opt_in" and opted_out):
        tenants.set_opted_out(conn, user.id, opted_out=keyword == "opt_out")
        forget_user(redis_for(settings), tenant.id, user.id)
        turn.notify(keyword, purpose=keyword)
        log.info("opt choice recorded", choice=keyword)
        return
    if opted_out:
        turn.close("suppressed", "The user opted out (STOP).")
        log.info("user opted out; message kept, no answer")
        return
    current = conversations.conversation_by_id(conn, conversation.id)
    if current is not None and current.state in conversations.WITH_STAFF:
        with conn.transaction():
            inbox.mark_processed(
                conn, turn.ids, "handoff", "With a person: kept for support staff, not answered."
            )
            # The user wrote back: the ball is in staff's court again.
            left = conversations.transition(
                conn, conversation.id, "HANDOFF", actor_kind="user", actor=str(user.id),
                reason="The user wrote while a person had the conversation.",
            )  # fmt: skip
        if left is not None:
            handoff.schedule_auto_return(conn, settings, tenant, conversation.id)
        log.info("conversation is with a person; message kept for staff")
        return
    if keyword == "data_request":
        text = tenant.data_request_message or NOTICES["data_request"][turn.language]
        turn.finish([text], kind="data_request", purpose="notice")
        log.info("told the user how to request their data", source="tenant" if
                 tenant.data_request_message else "default")  # fmt: skip
        return
    rights = _entitlement(conn, settings, tenant, user)
    used, noticed = identity.count_message(conn, tenant.id, user.id, len(pending), tenant.timezone)
    refusal = _refusal(user, rights, used)
    if refusal is not None:
        if noticed:
            turn.close("suppressed", f"Not answered: {refusal}.")
            log.info("not answered; today's notice already went out", reason=refusal)
            return
        identity.note_notice(conn, user.id, tenant.timezone)
        turn.notify("not_enabled" if not user.enabled else "over_quota")
        log.info("answered with a notice, without the model", reason=refusal)
        return
    spent = budgets.has_room(conn, spender_for(tenant, user))
    answerable = any(_answerable(m) for m in pending)
    if not answerable and (spent is None or _degrade_mode(tenant) != "notice"):
        turn.notify(_notice_for(pending))
        log.info("answered with a notice")
        return
    result = (
        _run_graph(turn, rights, noticed=noticed)
        if spent is None
        else _degraded(turn, rights, BudgetExhausted(spent), noticed)
    )
    overtaken = result is not None and result.reply and not result.interrupted
    if overtaken and _fold_into_next(turn, rights, used):
        if LONG_TERM_MEMORY.name in rights.features:
            _enqueue_extraction(turn)
        return
    if result is not None and result.interrupted:
        handoff.handed_off(conn, settings, tenant, conversation.id, result)
    if result is not None and result.reply:
        purpose = "handoff" if result.interrupted else "reply"
        parts = split_body(result.reply)
        turn.finish(parts, kind="reply", purpose=purpose, choices=_choices(result, parts[-1]))
    elif result is not None:
        turn.close("answered", "The run ended without a reply.")
    if result is not None and LONG_TERM_MEMORY.name in rights.features:
        _enqueue_extraction(turn)


def _choices(result: runner.RunResult, body: str) -> Choices | None:
    """The buttons or list the run offered, ready for the providers, asked after `body` (the
    reply's last part); None when it offered none, or none a provider could draw."""
    offered = result.choices
    if not offered:
        return None
    options = [Option(str(o["id"]), str(o["title"]), str(o.get("description") or ""))
               for o in offered["options"]]  # fmt: skip
    try:
        return make_choices(body, options, button=str(offered.get("button") or ""))
    except ValueError as exc:
        log.warning("the run offered options no provider draws; sending the text alone",
                    error=str(exc))  # fmt: skip
        return None


def _fold_into_next(turn: Turn, rights: identity.Entitlement, used: int) -> bool:
    """Drop the turn's reply when newer messages overtook it, and say whether it was dropped.

    The user has moved on: rather than an answer to what they said before and then another,
    the turn's messages close as `superseded` and the next turn answers them with the newer
    ones (the thread keeps them and what their tools did; only the unsent reply leaves it).
    Folded only when the next turn will reach the model (no keyword, quota left, the
    assistant still has the conversation), and only until the user has waited
    `turn_supersede_max_seconds`: past that, the reply goes out.
    """
    bound = turn.settings.turn_supersede_max_seconds
    conn, conversation = turn.conn, turn.conversation
    newer = store_turns.newer_inbound(conn, conversation.id, turn.ids[-1])
    if bound <= 0 or not newer or not _model_answers_next(turn, newer, rights, used):
        return False
    waited = store_turns.seconds_waited(conn, conversation.id, turn.ids[0])
    if waited >= bound:
        metrics.observe_superseded_turn("sent")
        log.info("newer messages arrived, but the user has waited long enough; sending",
                 waited=round(waited, 1), newer=[m.id for m in newer])  # fmt: skip
        return False
    with conn.transaction():  # the checkpoint shares the connection: all or nothing
        store_turns.mark_superseded(conn, turn.ids, newer[0].id)
        store_turns.mark_result_superseded(conn, turn.cid, turn.ids)
        runner.drop_unsent_reply(conn, {"configurable": {"thread_id": conversation.thread_id}})
    metrics.observe_superseded_turn("folded")
    log.info("reply not sent: newer messages overtook it; folded into the next turn",
             newer=[m.id for m in newer], waited=round(waited, 1))  # fmt: skip
    return True


def _model_answers_next(
    turn: Turn,
    newer: list[Message],
    rights: identity.Entitlement,
    used: int,
) -> bool:
    """Whether the turn that answers `newer` will run the model (so it can answer both)."""
    keyword, _ = _last_keyword(newer)
    if keyword is not None or not all(_answerable(m) for m in newer):
        return False
    if _refusal(turn.user, rights, used + len(newer)) is not None:  # the next turn's quota check
        return False
    current = conversations.conversation_by_id(turn.conn, turn.conversation.id)
    return current is not None and current.state not in conversations.WITH_STAFF


def _entitlement(
    conn: Conn, settings: Settings, tenant: Tenant, user: User
) -> identity.Entitlement:
    """The user's features and quota, through the Redis profile cache (L1)."""
    profile = cached_profile(
        redis_for(settings), conn, tenant.id, user.id, settings.profile_cache_seconds
    )
    return profile.entitlement if profile else identity.entitlement(conn, tenant.id, user.id)


def _enqueue_extraction(turn: Turn) -> None:
    """Queue the job that keeps durable facts from this turn (when the text has any cue)."""
    text = " ".join(m.text for m in turn.pending)
    if not has_first_person_cue(text):
        return
    try:
        enqueue_memory_extraction(redis_for(turn.settings), turn.settings, str(turn.tenant.id),
                                  str(turn.conversation.id), turn.ids, turn.cid)  # fmt: skip
    except RedisError as exc:  # the reply went out; a missed memory is not worth failing for
        log.warning("could not queue memory extraction", error=str(exc))


def _refusal(user: User, rights: identity.Entitlement, used: int) -> str | None:
    """Why this user gets no answer from the model today, if they do not."""
    if not user.enabled:
        return "the user is not enabled for this tenant"
    if rights.messages_per_day is not None and used > rights.messages_per_day:
        return f"over the plan's {rights.messages_per_day} messages a day"
    return None


def _language(tenant: Tenant, user: User, pending: list[Message]) -> Language:
    fallback = language_of_locale(user.locale or tenant.default_locale)
    return detect_language(" ".join(m.text for m in pending), default=fallback)


def _last_keyword(pending: list[Message]) -> tuple[str | None, int]:
    """Return the last opt-out/opt-in keyword of the turn and how many messages it closes
    (or a data request, answered alone once the messages before it are answered)."""
    for index in range(len(pending) - 1, -1, -1):
        if is_opt_out(pending[index].body):
            return "opt_out", index + 1
        if is_opt_in(pending[index].body):
            return "opt_in", index + 1
    # A data request is answered on its own turn, after the messages that came before it.
    for index, message in enumerate(pending):
        if is_data_request(message.body):
            return ("data_request", 1) if index == 0 else (None, index)
    return None, len(pending)


def _answerable(message: Message) -> bool:
    return message.kind in ("text", "button", "location") or (
        message.kind == "media" and bool(message.text)
    )


def _notice_for(pending: list[Message]) -> str:
    types = [str(item.get("content_type", "")) for m in pending for item in m.media]
    if any(m.transcription_status == "failed" for m in pending):
        return "audio_failed"
    if any(t.startswith("audio/") for t in types):
        return "audio"
    return "media" if types else "unsupported"


def _degraded(
    turn: Turn, rights: identity.Entitlement, spent: BudgetExhausted, noticed: bool
) -> runner.RunResult | None:
    """Answer a turn whose budget is spent, as the tenant chose: a cheaper model, the general
    assistant only (both recorded in the ledger, not stopped), or a polite notice once a day.
    Returns the run's result, or None when the turn was answered (or closed) without one."""
    tenant = turn.tenant
    mode = _degrade_mode(tenant)
    log.info("budget spent; the turn degrades", mode=mode, reason=str(spent))
    if mode == "notice":
        wants_person = asks_for_human(" ".join(m.text for m in turn.pending))
        if wants_person and HUMAN_HANDOFF.name in rights.features:
            return _run_graph(turn, rights, degrade="handoff")  # routed without the model
        if noticed:
            turn.close("suppressed", f"Not answered: {spent}; today's notice went out already.")
        else:
            identity.note_notice(turn.conn, turn.user.id, tenant.timezone)
            turn.notify("over_budget")
        return None
    return _run_graph(turn, rights, degrade=mode)


def _degrade_mode(tenant: Tenant) -> str:
    """What the tenant's turns do once a budget is spent (a cheaper model needs its name)."""
    if tenant.budget_exhausted == "cheaper_model" and not tenant.budget_cheaper_model:
        return "notice"
    return tenant.budget_exhausted


def _degrade_context(context: Context, tenant: Tenant, mode: str) -> Context:
    """The run context of a degraded turn: the cheaper model, or the general assistant only
    (with the handoff, so a person can still be asked for)."""
    if mode == "cheaper_model" and tenant.budget_cheaper_model:
        return replace(context, model=tenant.budget_cheaper_model,
                       router_model=tenant.budget_cheaper_model)  # fmt: skip
    kept = [f for f in context.features if FEATURES[f].route in (None, HANDOFF)]
    return replace(context, features=kept)


def _run_graph(
    turn: Turn, rights: identity.Entitlement, *, degrade: str | None = None, noticed: bool = False
) -> runner.RunResult | None:
    """Run the graph for the turn; None when it failed for good (the failure is recorded), or
    when a budget ran out during the run and the turn was degraded to a notice."""
    conn, settings, conversation, tenant, pending, cid, ids = (
        turn.conn, turn.settings, turn.conversation, turn.tenant, turn.pending, turn.cid, turn.ids,
    )  # fmt: skip
    context = runner.context_for(tenant, turn.user, rights)
    if degrade is not None:
        context = _degrade_context(context, tenant, degrade)
    config = runner.run_config(tenant, turn.user, conversation, cid, ids)
    started = time.monotonic()
    typing_channel = channel_for(settings, tenant) if tenant.typing_indicator else None
    try:
        with TypingIndicator(
            typing_channel,
            pending[-1].provider_message_id or "",
            after=settings.typing_after_seconds,
            every=settings.typing_refresh_seconds,
        ):
            result = runner.run_turn(
                conn, settings, tenant=tenant, user=turn.user, conversation=conversation,
                pending=pending, context=context, config=config,
                enforce_budget=degrade is None,
            )  # fmt: skip
    except BudgetExhausted as exc:  # spent by a concurrent turn since the check: degrade now
        return _degraded(turn, rights, exc, noticed)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        final = final_attempt()
        with conn.transaction():
            conversations.record_ai_result(
                conn, conversation=conversation, correlation_id=cid, inbound_ids=ids,
                reply=None, model=context.model, error=error, duration_ms=runner.ms_since(started),
            )  # fmt: skip
            if final:
                inbox.mark_processed(conn, ids, "failed", f"The assistant failed: {error}")
        log.error("graph run failed", error=error, final_attempt=final)
        if final:
            return None
        raise
    if result.answered is not None:  # a crashed run finished first: the rest is the next turn
        turn.pending = [m for m in pending if m.id in result.answered]
        ids, cid = turn.ids, turn.cid
    with conn.transaction():
        conversations.record_ai_result(
            conn, conversation=conversation, correlation_id=cid, inbound_ids=ids,
            reply=result.reply, model=context.model, error=None,
            duration_ms=runner.ms_since(started), route=result.route,
            route_reason=result.route_reason, tool_calls=result.tool_calls,
            prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
            interrupted=result.interrupted,
        )  # fmt: skip
    log.info(
        "graph run finished", route=result.route, tools=[c["name"] for c in result.tool_calls],
        interrupted=result.interrupted, resumed=result.resumed_from_checkpoint,
    )  # fmt: skip
    return result
