"""Minimal JSON values for a JSON schema: what the offline model answers a structured request with.

The offline model (:mod:`graphs.offline.model`) cannot think, but a structured output request
(``response_format`` json_schema, or a forced ``tool_choice``) must still get a value that
validates; :func:`instance_from_schema` builds the smallest one, and :func:`enum_of` reads a
property's allowed values (the router's routes) from the schema.
"""

from __future__ import annotations

from typing import Any

_FORMAT_EXAMPLES = {
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00",
    "email": "offline@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-0000-0000-000000000000",
    "duration": "PT0S",
}
_MAX_SCHEMA_DEPTH = 16


def instance_from_schema(schema: dict[str, Any]) -> Any:
    """Build a minimal JSON value that validates against ``schema``.

    Objects get their required properties, enums their first value, strings
    ``""``, numbers ``0``, booleans ``False`` and arrays ``[]``; ``$ref`` (into
    ``$defs``/``definitions``) is resolved and ``anyOf``/``oneOf`` take the first
    option. Good enough for the schemas pydantic and OpenAI's strict mode produce.
    """
    return _instance(schema, schema, 0)


def _resolve_ref(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#"):
        return {}
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node if isinstance(node, dict) else {}


def _instance(schema: Any, root: dict[str, Any], depth: int) -> Any:
    if not isinstance(schema, dict):
        return None
    too_deep = depth > _MAX_SCHEMA_DEPTH
    if "$ref" in schema:
        resolved = _resolve_ref(schema["$ref"], root)
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        return _instance({**resolved, **siblings}, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            option = options[0]
            if too_deep:
                option = next(
                    (o for o in options if isinstance(o, dict) and o.get("type") == "null"),
                    option,
                )
            return _instance(option, root, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            if isinstance(part, dict) and "$ref" in part:
                part = _resolve_ref(part["$ref"], root)
            if isinstance(part, dict):
                merged = {**part, **merged}
        return _instance(merged, root, depth + 1)

    schema_type = schema.get("type")
    if isinstance(schema_type, list):
        schema_type = next((t for t in schema_type if t != "null"), "null")
    if schema_type is None and "properties" in schema:
        schema_type = "object"

    if schema_type == "object":
        properties = schema.get("properties") or {}
        return {
            name: _instance(properties.get(name, {}), root, depth + 1)
            for name in schema.get("required") or []
        }
    if schema_type == "array":
        count = int(schema.get("minItems") or 0)
        if count and not too_deep:
            prefix = schema.get("prefixItems") or []
            items = [
                _instance(
                    prefix[i] if i < len(prefix) else schema.get("items", {}), root, depth + 1
                )
                for i in range(count)
            ]
            return items
        return []
    if schema_type == "string":
        example = _FORMAT_EXAMPLES.get(schema.get("format", ""), "")
        min_length = int(schema.get("minLength") or 0)
        return example if len(example) >= min_length else example + "x" * min_length
    if schema_type in ("integer", "number"):
        value: float = 0
        for bound, step in (("minimum", 0), ("exclusiveMinimum", 1)):
            if isinstance(schema.get(bound), int | float) and schema[bound] + step > value:
                value = schema[bound] + step
        for bound, step in (("maximum", 0), ("exclusiveMaximum", 1)):
            if isinstance(schema.get(bound), int | float) and schema[bound] - step < value:
                value = schema[bound] - step
        return int(value) if schema_type == "integer" else value
    if schema_type == "boolean":
        return False
    return None


def enum_of(schema: dict[str, Any], prop: str) -> list[str]:
    """The enum of property ``prop`` of an object schema (following ``$ref``/``anyOf``)."""
    node: Any = (schema.get("properties") or {}).get(prop) or {}
    for _ in range(_MAX_SCHEMA_DEPTH):
        if not isinstance(node, dict):
            return []
        if "$ref" in node:
            node = _resolve_ref(node["$ref"], schema)
        elif "enum" in node:
            return [str(v) for v in node["enum"]]
        elif "const" in node:
            return [str(node["const"])]
        elif node.get("anyOf") or node.get("oneOf") or node.get("allOf"):
            options = node.get("anyOf") or node.get("oneOf") or node.get("allOf")
            node = next((o for o in options if isinstance(o, dict) and o.get("type") != "null"), {})
        else:
            return []
    return []
