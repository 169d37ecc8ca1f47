"""Ask the chat model for structured output in the way its server supports.

Strict `json_schema` output (`response_format`) is the first choice: the server constrains the
answer to the schema. Many OpenAI-compatible servers (Ollama or vLLM set-ups among them) refuse
or ignore it, so `LLM_STRUCTURED_OUTPUT` chooses the method: `json_schema`, `function_calling`
(a forced tool call whose arguments are the answer) or `auto` (the default). With `auto`, the
method is what the start-up model check found (`graphs.probe`): the worker runs it before RQ
forks a work horse per job, so every job inherits it. Without that check the method is
`json_schema` until the server refuses it; the call is then made again with function calling,
which the process that made it keeps using. An RQ work horse ends with its job, so there each
job learns it again, at the cost of one refused call.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import openai
import structlog
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from graphs.models import load_chat_model
from graphs.settings import LLMSettings, llm_settings

log = structlog.get_logger(__name__)

StructuredMethod = Literal["json_schema", "function_calling"]
"""How `with_structured_output` asks for the answer."""

T = TypeVar("T", bound=BaseModel)

_methods: dict[tuple[str, str], StructuredMethod] = {}
_methods_lock = threading.Lock()

MAX_STRUCTURED = 64
"""How many (model, schema, method) runnables a process keeps; a handful exist."""

_structured: dict[tuple[int, type[BaseModel], str], tuple[ChatOpenAI, Runnable[Any, Any]]] = {}
_structured_lock = threading.Lock()


def endpoint(settings: LLMSettings | None = None) -> str:
    """Name the server the chat model is reached at: its base URL, OpenAI's, or the offline one."""
    settings = settings or llm_settings()
    if not settings.configured:
        return "offline"
    return settings.openai_base_url or "https://api.openai.com/v1"


def remember_method(model: str, method: StructuredMethod) -> None:
    """Record, for this process and what it forks later, which structured-output method works
    for `model` on the configured server."""
    with _methods_lock:
        _methods[(endpoint(), model)] = method


def forget_methods() -> None:
    """Forget what this process learned about structured output (tests, a changed config)."""
    with _methods_lock:
        _methods.clear()


def structured_method(model: str) -> StructuredMethod:
    """Return the method structured output uses for `model`: the setting, or what was learned."""
    settings = llm_settings()
    if settings.llm_structured_output != "auto":
        return settings.llm_structured_output
    with _methods_lock:
        return _methods.get((endpoint(settings), model), "json_schema")


def invoke_structured(
    model: str,
    schema: type[T],
    messages: Sequence[BaseMessage],
    config: RunnableConfig | None = None,
) -> T:
    """Ask `model` for an instance of `schema`, switching to function calling if it must.

    `config` carries the call's run name, metadata and callbacks (a tenant's tracers).
    Raises what the model call raises (connection errors, a refusal, an answer that does not
    fit `schema`); callers decide what a failure costs.
    """
    method = structured_method(model)
    llm = load_chat_model(model)
    try:
        structured = _with_structured_output(llm, schema, method)
        return _as(schema, structured.invoke(messages, config))
    except openai.BadRequestError as exc:
        if method != "json_schema" or llm_settings().llm_structured_output != "auto":
            raise
        refusal = error_text(exc)
    fallback = _with_structured_output(llm, schema, "function_calling")
    answer = _as(schema, fallback.invoke(messages, config))
    remember_method(model, "function_calling")
    log.warning(
        "the model's server refused json_schema structured output; used function calling "
        "instead (set LLM_STRUCTURED_OUTPUT=function_calling, or keep LLM_CHECK_AT_START on, "
        "to skip the refused call in every job)",
        model=model,
        error=refusal,
    )
    return answer


def _with_structured_output(
    llm: ChatOpenAI, schema: type[BaseModel], method: StructuredMethod
) -> Runnable[Any, Any]:
    """`llm.with_structured_output(schema, method=method)`, built once per process: building it
    converts `schema` to JSON schema twice. `llm` is the model's shared instance (see
    `graphs.models`); the entry keeps it, so its id stays its own."""
    key = (id(llm), schema, method)
    with _structured_lock:
        found = _structured.get(key)
    if found is not None and found[0] is llm:
        return found[1]
    runnable = llm.with_structured_output(schema, method=method)
    with _structured_lock:
        if len(_structured) >= MAX_STRUCTURED:
            _structured.clear()  # a handful of schemas and models exist; never reached in practice
        _structured[key] = (llm, runnable)
    return runnable


def _as(schema: type[T], answer: object) -> T:
    if isinstance(answer, schema):
        return answer
    return schema.model_validate(answer)


def error_text(exc: openai.APIStatusError) -> str:
    """Return the server's own error message (with its status), without the request."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return f"{exc.status_code}: {inner['message']}"
    return f"{exc.status_code}: {exc.message}"


def failure_reason(exc: BaseException) -> str:
    """Name, in one low-cardinality word, why a structured-output call failed.

    `unreachable` (no connection, or a timeout), `refused` (the server answered 4xx),
    `server_error` (5xx), `invalid_output` (the answer did not fit the schema), else `error`.
    """
    from langchain_core.exceptions import OutputParserException
    from pydantic import ValidationError

    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError is one too
        return "unreachable"
    if isinstance(exc, openai.APIStatusError):
        return "server_error" if exc.status_code >= 500 else "refused"
    if isinstance(exc, OutputParserException | ValidationError | ValueError | AssertionError):
        return "invalid_output"
    return "error"
