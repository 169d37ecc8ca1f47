"""Reminders: a WhatsApp message to the user at a time of their choosing.

`schedule_reminder` stores the reminder in UTC and, after its transaction commits, schedules
the delivery job for its time with RQ (`server/jobs/reminders.py`). Where no Redis is bound (Studio,
evals) or Redis refuses, the row alone is enough: the relay's sweep queues the delivery of any
reminder still scheduled a little after its time. A cancelled reminder stays in the table, and
its job, when it runs, finds it cancelled and sends nothing. Writes are idempotent per run step
and tool call (`tools._runtime.call_key`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import structlog
from langchain_core.tools import tool
from langgraph.prebuilt import ToolRuntime
from pydantic import Field
from redis import RedisError

from graphs.context import Context
from graphs.features import REMINDERS
from store import reminders
from store.reminders import Reminder, Scheduled
from tools._args import MAX_ID, ToolArgs
from tools._offers import offer, option
from tools._runtime import (
    Scope,
    ToolError,
    bound_scheduler,
    call_key,
    scope_of,
    tool_db,
    turn_language,
)
from tools.dates import local_now, zone
from tools.times import resolve_datetime

log = structlog.get_logger(__name__)

MAX_AHEAD = timedelta(days=2 * 366)
"""How far ahead a reminder may be set."""


def _reminders_allowed(context: Context | None) -> Scope:
    scope = scope_of(context)
    if context is not None and REMINDERS.name not in context.features:
        raise ToolError(
            "Reminders are not part of this user's plan. Tell the user you cannot set them."
        )
    return scope


def _local(moment: datetime, scope: Scope) -> str:
    return moment.astimezone(zone(scope.timezone)).strftime("%Y-%m-%d %H:%M")


class ScheduleReminderArgs(ToolArgs):
    """Arguments of `schedule_reminder`."""

    text: str = Field(min_length=1, max_length=500, description="What to remind the user of.")
    when: str = Field(
        max_length=80,
        description='When, in the user\'s time: "2026-11-26T09:00", "em 10 minutos", "daqui a '
        '1 hora", "amanhã às 9h", "in 5 minutes", "tomorrow at 9am", "sexta às 14h".',
    )


@tool(args_schema=ScheduleReminderArgs)
def schedule_reminder(text: str, when: str, runtime: ToolRuntime) -> str:
    """Send the user a WhatsApp message with `text` at a future time of their choosing.

    Returns the reminder's number (needed to cancel it) and its time in the user's timezone.
    """
    scope = _reminders_allowed(runtime.context)
    text, due = _reminder(text, when, scope)
    call_id = call_key(runtime)
    with tool_db(scope) as conn:
        row = reminders.insert_reminder(
            conn, scope.tenant_id, scope.user_id, text=text, due_at=due.astimezone(UTC),
            correlation_id=uuid4().hex, tool_call_id=call_id,
        )  # fmt: skip
        fresh = row is not None
        if row is None:  # this tool call already ran: answer as it did
            row = reminders.reminder_by_call(conn, scope.tenant_id, scope.user_id, call_id)
            if row is None:
                raise ToolError("This tool call id was already used; call the tool again.")
    if fresh:  # after the commit, so the job always finds the row
        queue_delivery(scope, row)
    return f"Scheduled reminder #{row.id} for {_local(row.due_at, scope)} ({scope.timezone})."


def _reminder(text: str, when: str, scope: Scope) -> tuple[str, datetime]:
    """The reminder's text and local time, or a `ToolError` the model can act on."""
    text = text.strip()
    if not text:
        raise ToolError("The reminder's text is empty; say what to remind the user of.")
    now = local_now(scope.timezone)
    due = resolve_datetime(when, now).replace(microsecond=0)
    if due <= now:
        raise ToolError(
            f"{when!r} is {due:%Y-%m-%d %H:%M}, which has passed (the user's local time is "
            f"{now:%Y-%m-%d %H:%M}). Ask for a time in the future."
        )
    if due - now > MAX_AHEAD:
        raise ToolError(f"{when!r} is too far ahead; reminders go at most two years ahead.")
    return text, due


@tool(args_schema=ScheduleReminderArgs, response_format="content_and_artifact")
def propose_reminder(text: str, when: str, runtime: ToolRuntime) -> tuple[str, dict[str, Any]]:
    """Ask the user to confirm a reminder with Yes/No buttons before it is scheduled.

    Use it instead of `schedule_reminder` when the user did not clearly ask for a reminder
    (they mentioned a bill, an appointment or a date to come) or you had to guess the time:
    ask in your answer whether they want it; their Yes schedules it without you.
    """
    scope = _reminders_allowed(runtime.context)
    text, due = _reminder(text, when, scope)
    language = turn_language(runtime, scope)
    due_utc = due.astimezone(UTC).isoformat()
    options = [
        option(_YES[language], {"do": "schedule_reminder", "text": text, "due": due_utc}),
        option(_NO[language], {"do": "decline_reminder"}),
    ]
    return (
        f"Proposed a reminder of {text!r} for {_local(due, scope)} ({scope.timezone}); the "
        "user confirms or declines with a button. Do not schedule it yourself."
    ), offer(options)


_YES = {"pt": "Sim", "en": "Yes"}
_NO = {"pt": "Não", "en": "No"}


def queue_delivery(scope: Scope, row: Scheduled) -> None:
    """Schedule the delivery job; without Redis (Studio, evals) the relay's sweep delivers it."""
    schedule = bound_scheduler()
    if schedule is None:
        log.info("no scheduler bound; the relay's sweep will deliver the reminder", reminder=row.id)
        return
    try:
        schedule(scope.tenant_id, row.id, row.correlation_id, row.due_at)
    except RedisError as exc:
        log.warning("could not schedule the reminder; the relay's sweep will deliver it",
                    reminder=row.id, error=str(exc))  # fmt: skip
        return
    with tool_db(scope) as conn:
        reminders.mark_enqueued(conn, row.id)


class ListRemindersArgs(ToolArgs):
    """Arguments of `list_reminders` (none)."""


@tool(args_schema=ListRemindersArgs)
def list_reminders(runtime: ToolRuntime) -> str:
    """List the user's reminders still to be sent, soonest first, with their numbers.

    Returns JSON: each reminder's id, text and time in the user's timezone.
    """
    scope = _reminders_allowed(runtime.context)
    with tool_db(scope) as conn:
        rows = reminders.scheduled_for_user(conn, scope.tenant_id, scope.user_id, limit=50)
    listed = [{"id": r.id, "text": r.text, "due": _local(r.due_at, scope)} for r in rows]
    return json.dumps({"timezone": scope.timezone, "reminders": listed}, ensure_ascii=False)


class CancelReminderArgs(ToolArgs):
    """Arguments of `cancel_reminder`."""

    reminder_id: int = Field(ge=1, le=MAX_ID, description="The reminder's number (#id), as listed.")


@tool(args_schema=CancelReminderArgs)
def cancel_reminder(reminder_id: int, runtime: ToolRuntime) -> str:
    """Cancel one of the user's scheduled reminders by its number, so it is never sent."""
    scope = _reminders_allowed(runtime.context)
    call_id = call_key(runtime)
    with tool_db(scope) as conn:
        row = reminders.lock_users_reminder(conn, scope.tenant_id, scope.user_id, reminder_id)
        if row is None:
            raise ToolError(
                f"There is no reminder #{reminder_id} for this user. "
                "Call list_reminders to see the user's reminders and their numbers."
            )
        replay = row.cancelled_by_tool_call_id == call_id
        if row.status == "scheduled":
            reminders.cancel(conn, reminder_id, call_id)
        elif not (row.status == "cancelled" and replay):
            raise ToolError(_not_cancellable(row, scope))
    return f"Cancelled reminder #{row.id} ({row.text}), which was due {_local(row.due_at, scope)}."


def _not_cancellable(row: Reminder, scope: Scope) -> str:
    if row.status == "cancelled":
        return f"Reminder #{row.id} was already cancelled."
    if row.status == "delivered":
        return f"Reminder #{row.id} was already sent, at {_local(row.due_at, scope)}."
    return f"Reminder #{row.id} could not be delivered ({row.error}); nothing to cancel."
