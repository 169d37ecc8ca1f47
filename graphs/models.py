"""Build the chat model for a run: always `ChatOpenAI`, against OpenAI or a compatible server.

With neither `OPENAI_API_KEY` nor `OPENAI_BASE_URL` configured, the model is the offline stand-in
served over the same protocol from this process, so there is one code path everywhere.

A process keeps one `ChatOpenAI` per model and configuration and hands the same one to every
turn (and thread): building one costs a millisecond or more (an OpenAI client, validation), and
its `invoke` keeps no state between calls, so sharing it is safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_openai import ChatOpenAI

from graphs.settings import llm_settings

OFFLINE_MODEL = "offline"

MAX_MODELS = 32
"""How many configured models a process keeps (a tenant may choose its own; the oldest
unused one goes first)."""


class ChatModel(ChatOpenAI):
    """`ChatOpenAI` that hands the `openai` client its messages already in wire form.

    The client walks every request body against the type graph of its parameters before
    sending it (`openai._utils._transform`), and for chat messages, a union of six message
    types, that walk does nothing but cost: ~7 ms of CPU per call with a 25-message thread and
    two tools, about 70% of the client's time (`bench/bench_turns.py` profiles). LangChain
    already builds the messages as plain JSON, so they go in `extra_body`, which the client
    merges into the body after the walk: the bytes on the wire are the same
    (`tests/test_model_cache.py` compares them). Chat Completions only; a Responses API
    payload has no `messages` and passes untouched.
    """

    def _get_request_payload(
        self, input_: LanguageModelInput, *, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop, **kwargs)
        if payload.get("messages"):
            payload["extra_body"] = {
                **(payload.get("extra_body") or {}),
                "messages": payload["messages"],
            }
            payload["messages"] = []  # a required argument; replaced by extra_body's
        return payload


_models: OrderedDict[Hashable, ChatOpenAI] = OrderedDict()
_models_lock = threading.Lock()


def load_chat_model(model: str, *, max_retries: int | None = None) -> ChatOpenAI:
    """Return a `ChatOpenAI` for `model` as configured in the environment, the same object for
    the same model and configuration. Treat it as read-only (bind, do not mutate).

    `max_retries` overrides `LLM_MAX_RETRIES` (the start-up model check asks once).
    """
    settings = llm_settings()
    if not settings.configured:
        from graphs.offline.model import ensure_offline_server

        base_url = ensure_offline_server()
        return _cached(
            (OFFLINE_MODEL, base_url),
            lambda: ChatModel(
                model=OFFLINE_MODEL,
                base_url=base_url,
                api_key="offline",  # type: ignore[arg-type]
                max_retries=0,
            ),
        )
    retries = settings.llm_max_retries if max_retries is None else max_retries
    return _cached(
        (
            model,
            settings.openai_base_url,
            settings.openai_api_key,
            settings.llm_temperature,
            settings.llm_timeout_seconds,
            retries,
        ),
        lambda: ChatModel(
            model=model,
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key or "not-needed",  # type: ignore[arg-type]
            temperature=settings.llm_temperature,
            timeout=settings.llm_timeout_seconds,
            max_retries=retries,
        ),
    )


def forget_models() -> None:
    """Drop the models this process keeps (tests; a changed configuration is a new key anyway)."""
    with _models_lock:
        _models.clear()


def _cached(key: Hashable, build: Callable[[], ChatOpenAI]) -> ChatOpenAI:
    with _models_lock:
        found = _models.get(key)
        if found is not None:
            _models.move_to_end(key)
            return found
    built = build()  # outside the lock: two threads may both build; the first one kept wins
    with _models_lock:
        found = _models.setdefault(key, built)
        _models.move_to_end(key)
        while len(_models) > MAX_MODELS:
            _models.popitem(last=False)
        return found
