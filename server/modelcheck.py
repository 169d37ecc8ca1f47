"""Tell the operator, at start and in `conversa check`, what the chat model can do.

The check itself is `graphs.probe`; this module decides how loudly to say the result. A model
that is down or weak never stops the service from starting: turns fail, or route to the general
assistant, until it is fixed, and the log line says so.
"""

from __future__ import annotations

import structlog

from graphs.probe import ModelReport, probe_model
from server.settings import Settings

log = structlog.get_logger(__name__)


def check_model_at_start(settings: Settings) -> ModelReport | None:
    """Check the chat model and log one line of what works (nothing if `LLM_CHECK_AT_START` is
    off); the structured-output method found is remembered for this process and its forks."""
    if not settings.llm_check_at_start:
        return None
    report = probe_model()
    fields = report.summary()
    if report.offline:
        log.info("model check: the offline stand-in answers (no OPENAI_API_KEY)", **fields)
    elif not report.chat.ok:
        log.warning(
            "model check: the model did not answer; turns fail until it does "
            "(run `conversa check` for details)",
            **fields,
        )
    elif not report.usable or report.structured_output is None:
        log.warning(
            "model check: the model cannot do everything the assistant needs "
            "(run `conversa check` for details)",
            **fields,
        )
    else:
        log.info(
            "model check: the model answers, calls tools and gives structured output", **fields
        )
    return report
