"""Reads and writes of the tenants' WhatsApp templates (`message_templates`).

Every function takes an open `psycopg.Connection` scoped to the tenant; the caller owns the
transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class MessageTemplate:
    """A tenant's WhatsApp template for one purpose and language."""

    id: UUID
    tenant_id: UUID
    purpose: str
    language: str
    content_sid: str
    body: str
    variables: dict[str, str]
    """Placeholder number -> named variable of the message, e.g. {"1": "text"}."""
    status: str
    rejection_reason: str | None
    status_checked_at: datetime | None
    created_at: datetime
    updated_at: datetime


COLUMNS = tuple(f.name for f in fields(MessageTemplate))
_SELECT = f"select {', '.join(COLUMNS)} from message_templates"
CHANGEABLE = frozenset({
    "language", "content_sid", "body", "variables", "status", "rejection_reason",
    "status_checked_at",
})  # fmt: skip


def list_templates(conn: psycopg.Connection, tenant_id: UUID) -> list[MessageTemplate]:
    """Return the tenant's templates, by purpose and language."""
    with conn.cursor(row_factory=class_row(MessageTemplate)) as cur:
        cur.execute(f"{_SELECT} where tenant_id = %s order by purpose, language", (tenant_id,))
        return cur.fetchall()


def get_template(
    conn: psycopg.Connection, tenant_id: UUID, template_id: UUID, *, lock: bool = False
) -> MessageTemplate | None:
    """Return one of the tenant's templates (locked for update when `lock`)."""
    suffix = " for update" if lock else ""
    with conn.cursor(row_factory=class_row(MessageTemplate)) as cur:
        cur.execute(f"{_SELECT} where id = %s and tenant_id = %s{suffix}", (template_id, tenant_id))
        return cur.fetchone()


def approved_for(conn: psycopg.Connection, tenant_id: UUID, purpose: str) -> list[MessageTemplate]:
    """Return the tenant's approved templates for `purpose`, in every language."""
    with conn.cursor(row_factory=class_row(MessageTemplate)) as cur:
        cur.execute(
            f"""{_SELECT} where tenant_id = %s and purpose = %s and status = 'approved'
                order by language""",
            (tenant_id, purpose),
        )
        return cur.fetchall()


def create_template(
    conn: psycopg.Connection,
    tenant_id: UUID,
    *,
    purpose: str,
    language: str,
    content_sid: str,
    body: str,
    variables: Mapping[str, str],
    status: str = "pending",
    rejection_reason: str | None = None,
) -> MessageTemplate:
    """Store a new template (a second one for the same purpose and language is refused)."""
    with conn.cursor(row_factory=class_row(MessageTemplate)) as cur:
        cur.execute(
            f"""insert into message_templates (tenant_id, purpose, language, content_sid, body,
                    variables, status, rejection_reason)
                values (%s, %s, %s, %s, %s, %s, %s, %s)
                returning {", ".join(COLUMNS)}""",
            (tenant_id, purpose, language, content_sid, body, Jsonb(dict(variables)), status,
             rejection_reason),
        )  # fmt: skip
        created = cur.fetchone()
    assert created is not None
    return created


def update_template(
    conn: psycopg.Connection,
    tenant_id: UUID,
    template_id: UUID,
    changes: Mapping[str, Any],
    *,
    checked: bool = False,
    if_content_sid: str | None = None,
) -> MessageTemplate | None:
    """Change some of a template's fields (`CHANGEABLE`); None when there is no such template.

    `checked` records that the status was just read from Twilio; `if_content_sid` changes the
    template only while it still names that Content SID (None otherwise)."""
    unknown = set(changes) - CHANGEABLE
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)} of a template")
    assignments = [sql.SQL("{} = %s").format(sql.Identifier(c)) for c in changes]
    assignments.append(sql.SQL("updated_at = now()"))
    if checked:
        assignments.append(sql.SQL("status_checked_at = now()"))
    guard = sql.SQL(" and content_sid = %s" if if_content_sid is not None else "")
    query = sql.SQL("update message_templates set {} where id = %s and tenant_id = %s{} "
                    "returning {}").format(
        sql.SQL(", ").join(assignments), guard, sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    )  # fmt: skip
    values = [Jsonb(dict(v)) if isinstance(v, Mapping) else v for v in changes.values()]
    where = [template_id, tenant_id, *([if_content_sid] if if_content_sid is not None else [])]
    with conn.cursor(row_factory=class_row(MessageTemplate)) as cur:
        cur.execute(query, [*values, *where])
        return cur.fetchone()


def delete_template(conn: psycopg.Connection, tenant_id: UUID, template_id: UUID) -> bool:
    """Delete one of the tenant's templates; False when there was none."""
    cur = conn.execute(
        "delete from message_templates where id = %s and tenant_id = %s", (template_id, tenant_id)
    )
    return cur.rowcount == 1
