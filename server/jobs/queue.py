"""Every enqueue of the service's RQ jobs, and the one retry policy they follow.

Jobs are named by import path, so the API never imports LangGraph. Inbound turns reach the
queue through the relay (`server.relay`); workers enqueue sends directly after their commit.

The retry policy, all of it here: a job that raises (a crash, a database or Redis hiccup) is
retried by RQ `JOB_RETRIES` times, 5, 30 and 120 seconds later (`_retry`: turns,
transcriptions, support actions, auto-returns, memory extraction); every job is idempotent, so a
retry never doubles what the first try did. Two kinds heal another way, by design: a send never
raises for the provider's refusals, and `retry_send` queues it again after `send_backoff`
(exponential with jitter, up to `SEND_MAX_ATTEMPTS`) as the provider's error code decides; a
reminder's delivery whose job is lost is queued again by the relay's sweep
(`enqueue_reminders`). Chores (`enqueue_once_per_interval`) simply run at their next interval.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from redis import Redis
from redis.client import Pipeline
from rq import Queue, Retry
from rq.job import Job
from rq.queue import EnqueueData

from server.settings import QUEUE_PROCESS, QUEUE_SEND, QUEUE_TRANSCRIBE, Settings
from store.records import Message

PROCESS_JOB = "server.jobs.turn.process_ai_response"
SEND_JOB = "server.jobs.send.send_whatsapp_message"
TRANSCRIBE_JOB = "server.jobs.transcribe.transcribe_audio"
REMINDER_JOB = "server.jobs.reminders.deliver_reminder"
AUTO_RETURN_JOB = "server.jobs.handoff.auto_return"
EXTRACT_MEMORIES_JOB = "server.jobs.memories.extract_memories"
BUDGET_ALERT_JOB = "server.jobs.budget_alert.post_budget_alert"
_RETRY_INTERVALS = [5, 30, 120]


def _retry(settings: Settings) -> Retry | None:
    if settings.job_retries == 0:
        return None
    return Retry(max=settings.job_retries, interval=_RETRY_INTERVALS[: settings.job_retries])


def _inbound_job_data(settings: Settings, func: str, message: Message, verb: str) -> EnqueueData:
    return Queue.prepare_data(
        func,
        args=(str(message.tenant_id), message.id, message.correlation_id),
        timeout=settings.job_timeout,
        retry=_retry(settings),
        meta={"correlation_id": message.correlation_id},
        description=f"{verb} message {message.id}",
    )


def turn_job_data(settings: Settings, message: Message) -> EnqueueData:
    """Describe the graph run that answers an inbound message (and any waiting with it)."""
    return _inbound_job_data(settings, PROCESS_JOB, message, "answer")


def transcribe_job_data(settings: Settings, message: Message) -> EnqueueData:
    """Describe the transcription of a voice note, which then queues its turn."""
    return _inbound_job_data(settings, TRANSCRIBE_JOB, message, "transcribe")


def send_job_data(message: Message, attempt: int = 0) -> EnqueueData:
    """Describe the Twilio send of an outbound message (it retries by Twilio's codes)."""
    return Queue.prepare_data(
        SEND_JOB,
        args=(str(message.tenant_id), message.id, message.correlation_id, attempt),
        timeout=60,
        meta={"correlation_id": message.correlation_id},
        description=f"send message {message.id}" + (f" (try {attempt + 1})" if attempt else ""),
    )


def enqueue_send(redis: Redis, message: Message) -> Job:
    """Queue the Twilio send of an outbound message now."""
    (job,) = Queue(QUEUE_SEND, connection=redis).enqueue_many([send_job_data(message)])
    return job


def enqueue_support_job(
    redis: Redis, settings: Settings, job: str, *args: object, cid: str, description: str
) -> Job:
    """Queue one of the support jobs (`server.jobs.handoff.hand_back`, `take_over`) now."""
    return Queue(QUEUE_PROCESS, connection=redis).enqueue(
        f"server.jobs.handoff.{job}",
        args=args,
        job_timeout=settings.job_timeout,
        retry=_retry(settings),
        meta={"correlation_id": cid},
        description=description,
    )


def enqueue_once_per_interval(
    redis: Redis, settings: Settings, *, key: str, interval: float, func: str, description: str
) -> bool:
    """Queue a chore over every tenant (`func`, no arguments) unless some API process already
    did in the last `interval` seconds (a Redis key taken with NX); return whether it queued.
    An interval of 0 turns the chore off."""
    if interval <= 0 or not redis.set(key, "1", nx=True, px=int(interval * 1000)):
        return False
    Queue(QUEUE_PROCESS, connection=redis).enqueue(
        func, job_timeout=max(settings.job_timeout, 600), description=description
    )
    return True


def enqueue_turn(redis: Redis, settings: Settings, message: Message) -> None:
    """Queue the turn that answers `message` (and what waited behind it) now."""
    Queue(QUEUE_PROCESS, connection=redis).enqueue_many([turn_job_data(settings, message)])


def enqueue_relayed(
    pipe: Pipeline,
    redis: Redis,
    *,
    voice: list[EnqueueData],
    turns: list[EnqueueData],
    sends: list[EnqueueData],
) -> None:
    """Add the relay's batch of jobs to `pipe` (the caller executes it: one round trip)."""
    for queue, jobs in ((QUEUE_TRANSCRIBE, voice), (QUEUE_PROCESS, turns), (QUEUE_SEND, sends)):
        if jobs:
            Queue(queue, connection=redis).enqueue_many(jobs, pipeline=pipe)


def enqueue_memory_extraction(
    redis: Redis, settings: Settings, tenant_id: str, conversation_id: str, ids: list[int], cid: str
) -> None:
    """Queue the job that keeps durable facts from a turn's messages."""
    Queue(QUEUE_PROCESS, connection=redis).enqueue(
        EXTRACT_MEMORIES_JOB,
        args=(tenant_id, conversation_id, ids, cid),
        job_timeout=settings.job_timeout,
        retry=_retry(settings),
        meta={"correlation_id": cid},
        description=f"remember facts from messages {ids}",
    )


def enqueue_budget_alert(
    redis: Redis, settings: Settings, tenant_id: str, payload: dict[str, object], cid: str
) -> None:
    """Queue the POST of one budget alert to the tenant's alert webhook (retried like jobs)."""
    Queue(QUEUE_SEND, connection=redis).enqueue(
        BUDGET_ALERT_JOB,
        args=(tenant_id, payload, cid),
        job_timeout=settings.job_timeout,
        retry=_retry(settings),
        meta={"correlation_id": cid},
        description=f"budget alert {payload.get('level')}% to the tenant's webhook",
    )


def enqueue_auto_return(
    redis: Redis, settings: Settings, tenant_id: str, conversation_id: str, at: datetime
) -> None:
    """Schedule the return of a conversation staff went silent on, at `at`."""
    Queue(QUEUE_PROCESS, connection=redis).enqueue_at(
        at, AUTO_RETURN_JOB, args=(tenant_id, conversation_id),
        job_timeout=settings.job_timeout, retry=_retry(settings),
        description=f"auto-return {conversation_id}",
    )  # fmt: skip


def reminder_job_data(tenant_id: str, reminder_id: int, correlation_id: str) -> EnqueueData:
    """Describe the delivery of one reminder (it only puts a message in the outbox)."""
    return Queue.prepare_data(
        REMINDER_JOB,
        args=(tenant_id, reminder_id, correlation_id),
        timeout=60,
        meta={"correlation_id": correlation_id},
        description=f"deliver reminder {reminder_id}",
    )


def schedule_reminder(
    redis: Redis, tenant_id: str, reminder_id: int, correlation_id: str, due_at: datetime
) -> Job:
    """Schedule the delivery job of a reminder for `due_at` (aware) on the send queue."""
    job = reminder_job_data(tenant_id, reminder_id, correlation_id)
    return Queue(QUEUE_SEND, connection=redis).enqueue_at(
        due_at, job.func, args=job.args, job_timeout=job.timeout, meta=job.meta,
        description=job.description,
    )  # fmt: skip


def enqueue_reminders(redis: Redis, jobs: list[EnqueueData]) -> None:
    """Queue reminder deliveries now (the sweep's, for reminders whose job was lost)."""
    Queue(QUEUE_SEND, connection=redis).enqueue_many(jobs)


def send_backoff(settings: Settings, attempt: int) -> float:
    """Seconds before retry `attempt + 1`: exponential, capped, with full jitter on the top half."""
    ceiling = min(settings.send_backoff_max_seconds, settings.send_backoff_seconds * 2**attempt)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_send(redis: Redis, settings: Settings, message: Message, attempt: int) -> float:
    """Queue send try `attempt` of `message` after its backoff; return the delay in seconds."""
    delay = send_backoff(settings, attempt - 1)
    job = send_job_data(message, attempt)
    Queue(QUEUE_SEND, connection=redis).enqueue_in(
        timedelta(seconds=delay), job.func, args=job.args, job_timeout=job.timeout,
        meta=job.meta, description=job.description,
    )  # fmt: skip
    return delay
