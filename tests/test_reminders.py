"""Reminders: the tools, delivery at their time by a real RQ worker, cancellation, the sweep."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from channels.sandbox.twilio import TwilioSandbox
from graphs.context import Context
from server.cli.main import main
from server.jobs import queue
from server.jobs.common import connect
from server.jobs.queue import reminder_job_data
from server.jobs.reminders import deliver_reminder, sweep_reminders
from server.relay import Relay
from server.services import Services
from server.settings import QUEUE_SEND, QUEUES, Settings
from store.records import Tenant, User
from tests.conftest import queued_jobs, rows, wait_until
from tests.toolcontext import (
    context_for,
    failed,
    make_tenant,
    make_user,
    make_user_with_conversation,
    ok,
)
from tests.tooling import replay_tool, run_tool
from tools._runtime import ToolResources, bind_resources
from tools.dates import local_now
from tools.reminders import cancel_reminder, list_reminders, schedule_reminder

SP = "America/Sao_Paulo"


@pytest.fixture
def user(settings: Settings, tenant: Tenant) -> User:
    return make_user_with_conversation(settings, tenant)


@pytest.fixture
def ana(tenant: Tenant, user: User) -> Context:
    return context_for(tenant, user)


@contextmanager
def bound(settings: Settings, tenant: Tenant, redis: Redis) -> Iterator[None]:
    """Run tools as a worker's graph run does: on the job's connection, with its Redis."""
    with (
        connect(settings, str(tenant.id)) as conn,
        bind_resources(
            ToolResources(conn, str(tenant.id), partial(queue.schedule_reminder, redis))
        ),
    ):
        yield


def _schedule(context: Context, text: str, when: str, call_id: str = "r1") -> int:
    answer = ok(run_tool(schedule_reminder, {"text": text, "when": when}, context, call_id=call_id))
    return int(answer.split("#")[1].split()[0])


def _in_seconds(seconds: int) -> tuple[datetime, str]:
    """A local time `seconds` from now, and how a user would write it."""
    due = (local_now(SP) + timedelta(seconds=seconds)).replace(microsecond=0)
    return due, due.strftime("%Y-%m-%dT%H:%M:%S")


def _wait_until_past(due: datetime) -> None:
    while local_now(SP) <= due + timedelta(seconds=1):
        time.sleep(0.1)


def _shift_back(settings: Settings, reminder_id: int, interval: str = "2 hours") -> None:
    """Move a reminder into the past, as if it had been scheduled that long ago."""
    rows(
        settings,
        "update reminders set due_at = due_at - %s::interval, created_at = created_at - "
        "%s::interval, enqueued_at = enqueued_at - %s::interval where id = %s returning id",
        interval, interval, interval, reminder_id,
    )  # fmt: skip


def _work(redis: Redis) -> None:
    """Run every queued job, and every scheduled job that is due, with a real RQ worker."""
    queues = [Queue(name, connection=redis) for name in QUEUES]
    SimpleWorker(queues, connection=redis).work(burst=True, with_scheduler=True)


# -- the tools -------------------------------------------------------------------------------


def test_schedule_stores_utc_and_lists_in_the_users_time(
    settings: Settings, user: User, ana: Context
) -> None:
    tomorrow = local_now(SP).date() + timedelta(days=1)
    answer = ok(run_tool(schedule_reminder, {"text": " ligar para a mãe ", "when": "amanhã às 9h"},
                         ana, call_id="r1"))  # fmt: skip
    assert answer == f"Scheduled reminder #1 for {tomorrow} 09:00 ({SP})."
    ((due, status, text, enqueued, owner),) = rows(
        settings, "select due_at, status, text, enqueued_at, user_id from reminders"
    )
    assert due == datetime.fromisoformat(f"{tomorrow}T09:00:00-03:00")
    assert (status, text, enqueued, owner) == ("scheduled", "ligar para a mãe", None, user.id)

    listed = json.loads(ok(run_tool(list_reminders, {}, ana)))
    assert listed == {
        "timezone": SP,
        "reminders": [{"id": 1, "text": "ligar para a mãe", "due": f"{tomorrow} 09:00"}],
    }


def test_a_replayed_schedule_answers_the_same_and_writes_nothing(
    settings: Settings, ana: Context
) -> None:
    first, again = replay_tool(schedule_reminder, {"text": "a", "when": "em 10 minutos"}, ana)
    assert ok(again) == ok(first)
    assert rows(settings, "select text from reminders") == [("a",)]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        ({"when": "2020-01-01T09:00"}, "which has passed"),
        ({"when": "quando der"}, "Could not understand the time"),
        ({"when": "amanhã"}, "say the time too"),
        ({"when": "em 800 dias"}, "too far ahead"),
        ({"text": "   "}, "text is empty"),
        ({"text": "x" * 501}, "text"),
        ({"user_id": "someone-else"}, "user_id"),
        ({"when": 1700000000}, "when"),
    ],
)
def test_schedule_refuses_bad_input(
    settings: Settings, ana: Context, args: dict[str, object], complaint: str
) -> None:
    base = {"text": "pagar a conta", "when": "em 5 minutos"}
    assert complaint in failed(run_tool(schedule_reminder, base | args, ana))
    assert rows(settings, "select count(*) from reminders") == [(0,)]


def test_reminders_need_the_feature(settings: Settings, tenant: Tenant, user: User) -> None:
    without = context_for(tenant, user, features=["finance", "relationships"])
    for tool, args in ((schedule_reminder, {"text": "x", "when": "em 5 minutos"}),
                       (list_reminders, {}), (cancel_reminder, {"reminder_id": 1})):  # fmt: skip
        assert "not part of this user's plan" in failed(run_tool(tool, args, without))
    assert rows(settings, "select count(*) from reminders") == [(0,)]


def test_cancel_only_the_users_own_scheduled_reminders(
    settings: Settings, tenant: Tenant, ana: Context
) -> None:
    bia = context_for(tenant, make_user(settings, tenant, phone="5511977776666"))
    other_tenant = make_tenant(settings)
    carl = context_for(other_tenant, make_user(settings, other_tenant))
    mine = _schedule(ana, "mine", "em 1 hora", "a1")
    hers = _schedule(bia, "hers", "em 1 hora", "b1")
    theirs = _schedule(carl, "theirs", "em 1 hora", "c1")

    for context, reminder in ((ana, hers), (ana, theirs), (bia, mine), (ana, 999)):
        error = failed(run_tool(cancel_reminder, {"reminder_id": reminder}, context))
        assert f"There is no reminder #{reminder} for this user" in error
    assert rows(settings, "select distinct status from reminders") == [("scheduled",)]

    cancelled = ok(run_tool(cancel_reminder, {"reminder_id": mine}, ana, call_id="x1"))
    assert cancelled.startswith(f"Cancelled reminder #{mine} (mine), which was due ")
    later = run_tool(cancel_reminder, {"reminder_id": mine}, ana, call_id="x1")
    assert "already cancelled" in failed(later), "the same call id in a later step is no replay"
    again = run_tool(cancel_reminder, {"reminder_id": mine}, ana, call_id="x2")
    assert "already cancelled" in failed(again)
    assert json.loads(ok(run_tool(list_reminders, {}, ana)))["reminders"] == []
    assert [r["text"] for r in json.loads(ok(run_tool(list_reminders, {}, bia)))["reminders"]] == [
        "hers"
    ]
    for bad in (0, -1, "one", 1.5):
        assert "reminder_id" in failed(run_tool(cancel_reminder, {"reminder_id": bad}, ana))
    first, replayed = replay_tool(cancel_reminder, {"reminder_id": hers}, bia, call_id="x1")
    assert ok(replayed) == ok(first), "a resumed step answers as it did"


# -- delivery --------------------------------------------------------------------------------


def test_a_reminder_is_sent_at_its_time_by_a_worker_with_the_scheduler(
    settings: Settings,
    tenant: Tenant,
    user: User,
    ana: Context,
    sandbox: TwilioSandbox,
    redis: Redis,
    worker_process: subprocess.Popen[bytes],
    tmp_path: Path,
) -> None:
    due, when = _in_seconds(2)
    with bound(settings, tenant, redis):
        reminder = _schedule(ana, "tomar o remédio", when)
    scheduled = ScheduledJobRegistry(queue=Queue(QUEUE_SEND, connection=redis))
    assert scheduled.count == 1, "the delivery waits in RQ's scheduled registry"
    assert rows(settings, "select enqueued_at is not null from reminders") == [(True,)]

    try:
        (sent,) = sandbox.wait_for_messages(1, timeout=60, to=user.address)
    except AssertionError:
        raise AssertionError((tmp_path / "worker.log").read_text()[-3000:]) from None
    assert sent["body"] == "⏰ Lembrete: tomar o remédio"
    assert sent["from"] == tenant.whatsapp_sender
    ((status, message_id, created_at, purpose, key),) = rows(
        settings,
        "select r.status, r.delivered_message_id, m.created_at, m.purpose, m.idempotency_key "
        "from reminders r join messages m on m.id = r.delivered_message_id where r.id = %s",
        reminder,
    )
    assert (status, purpose, key) == ("delivered", "reminder", f"reminder:{reminder}")
    assert created_at >= due, "never before its time"
    wait_until(
        lambda: rows(settings, "select provider_message_id = %s from messages where id = %s",
                     sent["sid"], message_id) == [(True,)],
        what="the send to be recorded",
    )  # fmt: skip


def test_a_cancelled_reminder_is_never_sent(
    settings: Settings,
    tenant: Tenant,
    user: User,
    ana: Context,
    sandbox: TwilioSandbox,
    redis: Redis,
) -> None:
    due, when = _in_seconds(1)
    with bound(settings, tenant, redis):
        reminder = _schedule(ana, "não mandar", when)
        ok(run_tool(cancel_reminder, {"reminder_id": reminder}, ana, call_id="x1"))
    (job_id,) = ScheduledJobRegistry(queue=Queue(QUEUE_SEND, connection=redis)).get_job_ids()
    _wait_until_past(due)
    _work(redis)

    assert Job.fetch(job_id, connection=redis).return_value() == "cancelled", "the job ran"
    assert sandbox.messages == []
    assert rows(settings, "select count(*) from messages where direction = 'outbound'") == [(0,)]
    assert rows(settings, "select status from reminders") == [("cancelled",)]


def test_a_reminder_whose_job_was_lost_is_swept_and_sent_once(
    settings: Settings,
    tenant: Tenant,
    user: User,
    ana: Context,
    sandbox: TwilioSandbox,
    redis: Redis,
) -> None:
    with bound(settings, tenant, redis):
        reminder = _schedule(ana, "reunião", "em 1 hora")
    redis.flushdb()  # Redis loses the scheduled job
    _shift_back(settings, reminder)  # ...and its time passes
    services = Services.build(settings)
    try:
        assert sweep_reminders(services.pool, services.redis, settings) == 1
        assert sweep_reminders(services.pool, services.redis, settings) == 0, "no storm"
        assert queued_jobs(settings, QUEUE_SEND) == 1
        _work(redis)
        assert [m["body"] for m in sandbox.messages] == ["⏰ Lembrete: reunião"]

        # The lost job turns up after all (Redis restored): nothing more goes out.
        job = reminder_job_data(str(tenant.id), reminder, "late")
        Queue(QUEUE_SEND, connection=redis).enqueue_many([job])
        _work(redis)
        assert len(sandbox.messages) == 1
        assert sweep_reminders(services.pool, services.redis, settings) == 0
    finally:
        services.close()
    assert rows(settings, "select count(*) from messages where purpose = 'reminder'") == [(1,)]
    assert rows(settings, "select status from reminders") == [("delivered",)]


def test_a_swept_job_that_is_lost_again_is_swept_again_later(
    settings: Settings, tenant: Tenant, ana: Context, redis: Redis
) -> None:
    reminder = _schedule(ana, "x", "em 1 hora")  # no Redis bound: only the sweep will queue it
    assert rows(settings, "select enqueued_at from reminders") == [(None,)]
    rows(settings, "update reminders set due_at = now() - interval '1 minute' returning id")
    services = Services.build(settings)
    try:
        assert sweep_reminders(services.pool, services.redis, settings) == 1
        redis.flushdb()
        assert sweep_reminders(services.pool, services.redis, settings) == 0
        stale = f"{settings.stale_job_seconds + 1} seconds"
        rows(settings, "update reminders set enqueued_at = enqueued_at - %s::interval "
                       "returning id", stale)  # fmt: skip
        assert sweep_reminders(services.pool, services.redis, settings) == 1
    finally:
        services.close()
    assert queued_jobs(settings, QUEUE_SEND) == 1
    assert rows(settings, "select id from reminders where status = 'scheduled'") == [(reminder,)]


def test_the_relay_loop_sweeps_reminders(settings: Settings, ana: Context, redis: Redis) -> None:
    reminder = _schedule(ana, "x", "em 1 hora")
    _shift_back(settings, reminder)
    services = Services.build(settings)
    relay = Relay(services)
    relay.start()
    try:
        wait_until(lambda: queued_jobs(settings, QUEUE_SEND) == 1, what="the relay's sweep")
    finally:
        relay.stop()
        services.close()


def test_conversa_sweep_queues_overdue_reminders(
    settings: Settings, ana: Context, redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    reminder = _schedule(ana, "x", "em 1 hora")
    _shift_back(settings, reminder)
    assert main(["sweep"]) == 0
    assert "enqueued 1 overdue reminder(s)" in capsys.readouterr().out
    assert queued_jobs(settings, QUEUE_SEND) == 1


def test_delivery_in_english_once_and_not_before_its_time(
    settings: Settings, tenant: Tenant, user: User, ana: Context, redis: Redis
) -> None:
    rows(settings, "update users set locale = 'en-US' where id = %s returning id", user.id)
    early = _schedule(ana, "too soon", "em 1 hora", "r1")
    assert deliver_reminder(str(tenant.id), early, "cid") == "early"
    assert ScheduledJobRegistry(queue=Queue(QUEUE_SEND, connection=redis)).count == 1

    reminder = _schedule(ana, "call mom", "em 1 hora", "r2")
    _shift_back(settings, reminder)
    assert deliver_reminder(str(tenant.id), reminder, "cid") == "delivered"
    assert deliver_reminder(str(tenant.id), reminder, "cid") == "delivered"
    assert rows(settings, "select body, status from messages where purpose = 'reminder'") == [
        ("⏰ Reminder: call mom", "pending")
    ]
    assert queued_jobs(settings, QUEUE_SEND) == 1, "its send was queued"
    assert deliver_reminder(str(tenant.id), 999, "cid") == "missing"


def test_a_user_without_a_conversation_gets_a_failed_reminder_with_the_reason(
    settings: Settings, tenant: Tenant, redis: Redis
) -> None:
    lonely = context_for(tenant, make_user(settings, tenant, phone="5511955554444"))
    reminder = _schedule(lonely, "x", "em 1 hora")
    _shift_back(settings, reminder)
    assert deliver_reminder(str(tenant.id), reminder, "cid") == "failed"
    assert rows(settings, "select status, error from reminders") == [
        ("failed", "The user has no conversation to send the reminder to.")
    ]
    assert rows(settings, "select count(*) from messages where direction = 'outbound'") == [(0,)]
    error = failed(run_tool(cancel_reminder, {"reminder_id": reminder}, lonely))
    assert "could not be delivered" in error
