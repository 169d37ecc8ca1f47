"""Describe and enqueue the service's RQ jobs.

Jobs are named by import path, so the API never imports LangGraph. Inbound turns reach the
queue through the relay (`server.relay`); workers enqueue sends directly after their commit.
"""

from __future__ import annotations

from redis import Redis
from rq import Queue, Retry
from rq.job import Job
from rq.queue import EnqueueData

from server.settings import QUEUE_PROCESS, QUEUE_SEND, Settings
from store.records import Message

PROCESS_JOB = "server.jobs.turn.process_ai_response"
SEND_JOB = "server.jobs.send.send_whatsapp_message"
TRANSCRIBE_JOB = "server.jobs.transcribe.transcribe_audio"
_RETRY_INTERVALS = [5, 30, 120]


def _retry(settings: Settings) -> Retry | None:
    if settings.job_retries == 0:
        return None
    return Retry(max=settings.job_retries, interval=_RETRY_INTERVALS[: settings.job_retries])


def turn_job_data(settings: Settings, message: Message) -> EnqueueData:
    """Describe the graph run that answers an inbound message (and any waiting with it)."""
    return Queue.prepare_data(
        PROCESS_JOB,
        args=(str(message.tenant_id), message.id, message.correlation_id),
        timeout=settings.job_timeout,
        retry=_retry(settings),
        meta={"correlation_id": message.correlation_id},
        description=f"answer message {message.id}",
    )


def transcribe_job_data(settings: Settings, message: Message) -> EnqueueData:
    """Describe the transcription of a voice note, which then queues its turn."""
    return Queue.prepare_data(
        TRANSCRIBE_JOB,
        args=(str(message.tenant_id), message.id, message.correlation_id),
        timeout=settings.job_timeout,
        retry=_retry(settings),
        meta={"correlation_id": message.correlation_id},
        description=f"transcribe message {message.id}",
    )


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
