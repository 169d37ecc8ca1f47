"""Build the chat model for a run: always `ChatOpenAI`, against OpenAI or a compatible server.

With neither `OPENAI_API_KEY` nor `OPENAI_BASE_URL` configured, the model is the offline stand-in
served over the same protocol from this process, so there is one code path everywhere.
"""

from __future__ import annotations

from langchain_openai import ChatOpenAI

from graphs.settings import LLMSettings

OFFLINE_MODEL = "offline"


def load_chat_model(model: str, *, max_retries: int | None = None) -> ChatOpenAI:
    """Return a `ChatOpenAI` for `model` as configured in the environment.

    `max_retries` overrides `LLM_MAX_RETRIES` (the start-up model check asks once).
    """
    settings = LLMSettings()
    if not settings.configured:
        from graphs.offline.model import ensure_offline_server

        return ChatOpenAI(
            model=OFFLINE_MODEL,
            base_url=ensure_offline_server(),
            api_key="offline",  # type: ignore[arg-type]
            max_retries=0,
        )
    return ChatOpenAI(
        model=model,
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key or "not-needed",  # type: ignore[arg-type]
        temperature=settings.llm_temperature,
        timeout=settings.llm_timeout_seconds,
        max_retries=settings.llm_max_retries if max_retries is None else max_retries,
    )
