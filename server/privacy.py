"""Hide what a tenant does not want in traces: message text and phone numbers.

Tenants with `trace_privacy = 'masked'` get traces whose structure (nodes, routes, tool names,
token counts, timings) is intact and whose words are not: every string that is not a known
structural field is replaced, and anything that looks like a phone number or WhatsApp address
is masked wherever it appears.
"""

from __future__ import annotations

import re
from dataclasses import fields, is_dataclass
from typing import Any

HIDDEN = "[hidden]"

_STRUCTURAL_KEYS = frozenset({
    "type", "role", "name", "id", "tool_call_id", "route", "status", "model", "model_name",
    "language", "kind", "finish_reason", "currency", "category", "period",
})  # fmt: skip
"""Keys whose string values describe the run's shape, not what the user said."""

_PHONE = re.compile(r"(?:whatsapp:)?\+?\d[\d\s().-]{6,}\d")


def mask_phone_numbers(text: str) -> str:
    """Replace phone numbers and WhatsApp addresses in `text`."""
    return _PHONE.sub("[phone]", text)


def mask_trace(value: Any, key: str | None = None) -> Any:
    """Return `value` (a trace's inputs or outputs) with text and phone numbers hidden."""
    if isinstance(value, dict):
        return {k: mask_trace(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_trace(item, key) for item in value]
    if isinstance(value, str):
        if key in _STRUCTURAL_KEYS:
            return mask_phone_numbers(value)
        return HIDDEN if value else value
    if value is None or isinstance(value, bool | int | float):
        return value
    if hasattr(value, "model_dump"):
        return mask_trace(value.model_dump(), key)
    if is_dataclass(value) and not isinstance(value, type):
        return mask_trace({f.name: getattr(value, f.name) for f in fields(value)}, key)
    return HIDDEN  # an object we cannot look inside may hold anything
