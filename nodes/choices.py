"""Questions with options: a tool offers buttons or a list with the reply, and a press (or the
option's number typed back) is the user's answer to that question, in the thread.

A tool offers options through its artifact (`offer`), which the model never reads: each option
carries the `action` a press of it runs. The `reply` node (`ask`) turns this turn's offers into
one question: it gives the options ids (`cv:<question>.<n>`), keeps the question in the state
with their actions, and shows the options in the thread's copy of the answer, numbered, so the
model later reads what the user saw. The ids are all that travels to the provider and back: a
press of an id no open question holds (answered, or more than `OPEN_QUESTIONS` questions ago)
changes nothing and gets a polite "that question no longer stands".

A press is answered here, without the model: undo or delete the entry, schedule or decline the
reminder. The writes are keyed by the press's message id, so a replayed run does them once.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.runtime import Runtime

from graphs.context import Context
from graphs.features import FINANCE, GENERAL, REMINDERS
from graphs.state import State
from nodes.context import turn_messages
from store import categories, reminders
from store import finance as entries
from tools._offers import OFFER, Action
from tools._runtime import Scope, ToolError, scope_of, tool_db
from tools.amounts import describe_amount
from tools.dates import local_now, zone
from tools.reminders import queue_delivery

log = structlog.get_logger(__name__)

ID_PREFIX = "cv:"
"""Marks an option id as ours (a tenant's template buttons carry payloads of their own)."""
OPEN_QUESTIONS = 5
"""How many unanswered questions a thread keeps; an older one no longer stands."""
MAX_BUTTONS = 3

NO_LONGER = {
    "pt": "Essa pergunta não vale mais. Se ainda quiser, é só me dizer o que precisa.",
    "en": "That question no longer stands. If you still want it, just tell me what you need.",
}
_UNDONE = {"pt": "Desfeito: apaguei o lançamento #{id} ({what}).",
           "en": "Undone: I deleted entry #{id} ({what})."}  # fmt: skip
_DELETED = {"pt": "Apaguei o lançamento #{id} ({what}).",
            "en": "I deleted entry #{id} ({what})."}  # fmt: skip
_WAS_DELETED = {"pt": "O lançamento #{id} já tinha sido apagado.",
                "en": "Entry #{id} had already been deleted."}  # fmt: skip
_SCHEDULED = {"pt": "Combinado: lembrete #{id} para {when}.",
              "en": "Done: reminder #{id} for {when}."}  # fmt: skip
_DECLINED = {"pt": "Tudo bem, não agendei o lembrete.",
             "en": "All right, I did not set the reminder."}  # fmt: skip
_PASSED = {"pt": "Esse horário já passou, então não agendei. Me diga outro horário.",
           "en": "That time has passed, so I did not set it. Tell me another time."}  # fmt: skip


# -- offering ----------------------------------------------------------------------------------


def turn_offer(messages: Sequence[AnyMessage]) -> dict[str, Any] | None:
    """What this turn's tools offered: their quick replies together when they fit in three
    buttons (two expenses recorded: two undo buttons), else the last offer."""
    offers = []
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            break
        if not isinstance(message, ToolMessage) or message.status == "error":
            continue
        if isinstance(message.artifact, dict) and OFFER in message.artifact:
            offers.append(message.artifact[OFFER])
    offers.reverse()
    if not offers:
        return None
    merged = [o for found in offers for o in found["options"]]
    if all(not found["button"] for found in offers) and len(merged) <= MAX_BUTTONS:
        return {"button": "", "options": merged}
    return offers[-1]


def ask(state: State, answer: AIMessage, offered: Mapping[str, Any]) -> dict[str, Any]:
    """The state update that asks `offered` with `answer`: the question kept with its actions,
    the options to send, and the thread's copy of the answer with the options numbered."""
    question_id = secrets.token_hex(4)
    options = [
        {**o, "id": f"{ID_PREFIX}{question_id}.{n}"} for n, o in enumerate(offered["options"], 1)
    ]
    question = {"id": question_id, "message_id": answer.id, "route": state.route,
                "options": options}  # fmt: skip
    numbered = "\n".join(f"{n}. {o['title']}" for n, o in enumerate(options, 1))
    shown = AIMessage(content=f"{answer.text.strip()}\n\n{numbered}", id=answer.id)
    return {
        "choices": {
            "button": offered["button"],
            "options": [
                {"id": o["id"], "title": o["title"], "description": o["description"]}
                for o in options
            ],
        },
        "questions": [*state.questions, question][-OPEN_QUESTIONS:],
        "messages": [shown],
    }


# -- answering ---------------------------------------------------------------------------------

Found = tuple[dict[str, Any], dict[str, Any]] | None


def _press(messages: list[AnyMessage]) -> HumanMessage | None:
    """The turn's one user message, when the turn is exactly one (a press, or typed)."""
    turn = turn_messages(messages)
    return turn[0] if len(turn) == 1 else None


def _last_answer_id(messages: list[AnyMessage]) -> str | None:
    for message in reversed(messages):
        if isinstance(message, AIMessage):
            return message.id
    return None


def _typed(text: str, question: Mapping[str, Any]) -> dict[str, Any] | None:
    """The option of `question` the user typed: its number, or its title."""
    typed = " ".join(text.split()).casefold().rstrip(".")
    options: list[dict[str, Any]] = question["options"]
    if typed.isdigit() and 1 <= int(typed) <= len(options):
        return options[int(typed) - 1]
    return next((o for o in options if o["title"].casefold() == typed), None)


def _answer_to(state: State) -> tuple[HumanMessage, Found] | None:
    """The turn's answer to a question with options, if it is one: a press of ours, with the
    question and option it names (None when that question no longer stands), or the number or
    title of an option of the question the last answer asked; None for anything else."""
    message = _press(state.messages)
    if message is None:
        return None
    choice = str(message.additional_kwargs.get("choice") or "")
    if choice.startswith(ID_PREFIX):
        for question in reversed(state.questions):
            for candidate in question["options"]:
                if candidate["id"] == choice:
                    return message, (question, candidate)
        return message, None
    if not state.questions:
        return None
    newest = state.questions[-1]
    if newest["message_id"] != _last_answer_id(state.messages[:-1]):
        return None
    picked = _typed(message.text, newest)
    return (message, (newest, picked)) if picked is not None else None


def after_context(state: State) -> str:
    """Answer a question's option without the model, or go on to the memories and router."""
    return "answer_choice" if _answer_to(state) is not None else "retrieve_memories"


def answer_choice(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Run the pressed option's action and say what it did; or say the question no longer
    stands. The question is answered either way: it leaves the open questions."""
    context = runtime.context or Context()
    language = state.language
    answer = _answer_to(state)
    assert answer is not None, "routed here by after_context"
    message, found = answer
    if found is None:
        log.info("a press of a question that no longer stands")
        return {"messages": [AIMessage(NO_LONGER[language])], "route": GENERAL.name,
                "route_reason": "a press of a question that no longer stands"}  # fmt: skip
    question, picked = found
    key = f"choice:{message.id}"
    try:
        text = _run(picked["action"], scope_of(context), context.features, key, language)
    except ToolError as exc:
        log.info("a pressed option cannot run", error=str(exc))
        text = NO_LONGER[language]
    return {
        "messages": [AIMessage(text)],
        "route": question["route"] or GENERAL.name,
        "route_reason": f"the user chose {picked['title']!r}",
        "active_specialist": question["route"] or "",
        "questions": [q for q in state.questions if q["id"] != question["id"]],
    }


def _run(action: Action, scope: Scope, features: Sequence[str], key: str, language: str) -> str:
    do = action.get("do")
    if do in ("undo_entry", "delete_entry"):
        if FINANCE.name not in features:
            raise ToolError("finance is no longer part of the user's plan")
        return _delete(int(action["entry"]), scope, key, language, undo=do == "undo_entry")
    if do in ("schedule_reminder", "decline_reminder"):
        if REMINDERS.name not in features:
            raise ToolError("reminders are no longer part of the user's plan")
        if do == "decline_reminder":
            return _DECLINED[language]
        return _schedule(str(action["text"]), datetime.fromisoformat(action["due"]), scope, key,
                         language)  # fmt: skip
    raise ToolError(f"unknown action {do!r}")


def _delete(entry_id: int, scope: Scope, key: str, language: str, *, undo: bool) -> str:
    with tool_db(scope) as conn:
        entry = entries.lock_entry(conn, scope.tenant_id, scope.user_id, entry_id)
        if entry is None:
            raise ToolError(f"no entry #{entry_id} for this user")
        if entry.deleted_at is not None and entry.deleted_by_tool_call_id != key:
            return _WAS_DELETED[language].format(id=entry_id)
        if entry.deleted_at is None:
            entries.delete_entry(conn, entry_id, key)
    what = (f"{describe_amount(entry.amount, entry.currency, language)}, "
            f"{categories.display(entry.category, language)}")  # fmt: skip
    return (_UNDONE if undo else _DELETED)[language].format(id=entry_id, what=what)


def _schedule(text: str, due: datetime, scope: Scope, key: str, language: str) -> str:
    if due <= local_now(scope.timezone):
        with tool_db(scope) as conn:  # a reminder this press already set may have passed
            done = reminders.reminder_by_call(conn, scope.tenant_id, scope.user_id, key)
        if done is None:
            return _PASSED[language]
    with tool_db(scope) as conn:
        row = reminders.insert_reminder(
            conn, scope.tenant_id, scope.user_id, text=text, due_at=due.astimezone(UTC),
            correlation_id=secrets.token_hex(16), tool_call_id=key,
        )  # fmt: skip
        fresh = row is not None
        if row is None:
            row = reminders.reminder_by_call(conn, scope.tenant_id, scope.user_id, key)
            assert row is not None
    if fresh:
        queue_delivery(scope, row)
    when = row.due_at.astimezone(zone(scope.timezone)).strftime("%d/%m %H:%M")
    return _SCHEDULED[language].format(id=row.id, when=when)
