"""Enqueue the service's RQ jobs. Jobs are named by import path, so the API never imports them."""

from __future__ import annotations

from redis import Redis
from rq import Queue, Retry
from rq.job import Job

from server.settings import QUEUE_PROCESS, QUEUE_SEND, Settings

PROCESS_JOB = "server.turns.process_ai_response"
SEND_JOB = "server.outbound.send_whatsapp_message"
_RETRY_INTERVALS = [5, 30, 120]


def _retry(settings: Settings) -> Retry | None:
    if settings.job_retries == 0:
        return None
    return Retry(max=settings.job_retries, interval=_RETRY_INTERVALS[: settings.job_retries])


def enqueue_turn(redis: Redis, settings: Settings, message_id: int, correlation_id: str) -> Job:
    """Queue the graph run that answers inbound message `message_id` (and any waiting with it)."""
    return Queue(QUEUE_PROCESS, connection=redis).enqueue(
        PROCESS_JOB,
        args=(message_id, correlation_id),
        job_timeout=settings.job_timeout,
        retry=_retry(settings),
        meta={"correlation_id": correlation_id},
        description=f"answer message {message_id}",
    )


def enqueue_send(redis: Redis, settings: Settings, message_id: int, correlation_id: str) -> Job:
    """Queue the Twilio send of outbound message `message_id` (it retries by Twilio's codes)."""
    return Queue(QUEUE_SEND, connection=redis).enqueue(
        SEND_JOB,
        args=(message_id, correlation_id),
        job_timeout=60,
        meta={"correlation_id": correlation_id},
        description=f"send message {message_id}",
    )
