"""Structured logging: console lines in development, JSON in production.

One correlation id per inbound message is bound with `bind_correlation_id` and rides on
every log line of that message's life: webhook, jobs, graph run and outbound send.
"""

from __future__ import annotations

import logging
import sys
import uuid
from typing import TextIO

import structlog
from structlog.typing import Processor

_SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.stdlib.ExtraAdder(),
    lambda _, __, event: {k: v for k, v in event.items() if k != "color_message"},
]


def configure_logging(
    app_env: str = "development", level: str = "INFO", stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging (uvicorn, rq, httpx) through one set of processors."""
    stream = stream or sys.stderr
    renderer: Processor
    if app_env == "production":
        renderer = structlog.processors.JSONRenderer()
        final: list[Processor] = [structlog.processors.dict_tracebacks, renderer]
    else:
        final = [structlog.dev.ConsoleRenderer(colors=stream.isatty())]

    structlog.configure(
        # Events below the level are dropped before any processor runs (the webhook logs at
        # INFO; at WARNING those lines should cost nothing).
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "rq.worker", "rq"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    for noisy in ("httpx", "httpx2", "httpcore", "twilio.http_client", "openai", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def new_correlation_id() -> str:
    """Return a fresh correlation id for one inbound message."""
    return uuid.uuid4().hex


_JOB_KEYS = ("rq_job_id",)
"""Bound by the worker around a whole job; a job's own binding keeps them."""


def bind_correlation_id(correlation_id: str, **extra: object) -> None:
    """Bind the correlation id (and extra keys) to every log line of this context, in place of
    what was bound before, except the RQ job's id the worker bound around the job."""
    bound = structlog.contextvars.get_contextvars()
    kept = {key: bound[key] for key in _JOB_KEYS if key in bound}
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**{**kept, "correlation_id": correlation_id, **extra})
