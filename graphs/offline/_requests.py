"""Requests to :mod:`graphs.offline.llm_server`: the checks OpenAI makes before answering.

Each failed check is a :class:`RequestError`, which the server answers in OpenAI's error shape
(``{"error": {"message", "type", "param", "code"}}``) with its HTTP status.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

MAX_BODY_BYTES = 32 * 1024 * 1024


class RequestError(Exception):
    """Signal a client error to be answered with OpenAI's error shape."""

    def __init__(
        self,
        status: HTTPStatus,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


def not_found(path: str) -> RequestError:
    """Return the error OpenAI answers for a path it does not serve."""
    return RequestError(HTTPStatus.NOT_FOUND, f"Unknown path: {path}", code="unknown_url")


def validate_request(request: dict[str, Any]) -> None:
    """Refuse a Chat Completions request without a non-empty list of message objects."""
    if "messages" not in request:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    messages = request["messages"]
    if not isinstance(messages, list) or not messages:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            "Invalid 'messages': expected a non-empty array of messages.",
            param="messages",
            code="invalid_value",
        )
    if not all(isinstance(m, dict) for m in messages):
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            "Invalid 'messages': every message must be an object.",
            param="messages",
            code="invalid_type",
        )


def refuse_json_schema(request: dict[str, Any]) -> None:
    """Refuse ``response_format`` ``json_schema``, as servers without structured output do."""
    response_format = request.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            "response_format type 'json_schema' is not supported by this server; "
            "use 'text' or 'json_object'.",
            param="response_format",
            code="unsupported_value",
        )
