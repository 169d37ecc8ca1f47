"""The SQL of the relationships tools: a user's people and the dates that matter to them.

People are unique per user by lower-cased name; an important date is unique per person, kind,
month, day and label. Every function takes a connection scoped to the tenant, inside the
caller's transaction, and names the user explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import psycopg

from store.query import all_rows, columns, one

Id = UUID | str


@dataclass(frozen=True)
class Person:
    """Someone in a user's life."""

    id: int
    name: str
    relation: str
    notes: str


@dataclass(frozen=True)
class KnownPerson(Person):
    """A person as found by name, with the tool call that last wrote them."""

    last_tool_call_id: str | None


@dataclass(frozen=True)
class SavedDate:
    """An important date of a person: month and day, the year when known."""

    id: int
    kind: str
    month: int
    day: int
    year: int | None
    yearly: bool
    label: str


@dataclass(frozen=True)
class NamedDate(SavedDate):
    """A saved date with its person's name."""

    name: str


@dataclass(frozen=True)
class PersonDate:
    """One of a user's dates with its person, for looking ahead."""

    kind: str
    month: int
    day: int
    year: int | None
    yearly: bool
    label: str
    name: str
    relation: str


_PERSON = columns(Person)
_DATE = columns(SavedDate)


def lock_person(
    conn: psycopg.Connection, tenant_id: Id, user_id: Id, name: str
) -> KnownPerson | None:
    """Read and lock the user's person called `name` (any capitalisation), if there is one."""
    return one(
        conn,
        KnownPerson,
        f"""select {columns(KnownPerson)} from people
            where tenant_id = %s and user_id = %s and lower(name) = lower(%s) for update""",
        (tenant_id, user_id, name),
    )


def remember_person(
    conn: psycopg.Connection,
    tenant_id: Id,
    user_id: Id,
    *,
    name: str,
    relation: str,
    notes: str,
    tool_call_id: str,
) -> Person:
    """Create the person, or update them: a new relation replaces the old, new notes are added
    to the old ones (unless already there; the last 2000 characters are kept)."""
    person = one(
        conn,
        Person,
        f"""insert into people (tenant_id, user_id, name, relation, notes, last_tool_call_id)
            values (%s, %s, %s, %s, %s, %s)
            on conflict (tenant_id, user_id, lower(name)) do update set
                relation = case when excluded.relation <> '' then excluded.relation
                                else people.relation end,
                notes = case
                    when excluded.notes = ''
                      or strpos(lower(people.notes), lower(excluded.notes)) > 0
                        then people.notes
                    when people.notes = '' then excluded.notes
                    else right(people.notes || E'\\n' || excluded.notes, 2000) end,
                last_tool_call_id = excluded.last_tool_call_id, updated_at = now()
            returning {_PERSON}""",
        (tenant_id, user_id, name, relation, notes, tool_call_id),
    )
    assert person is not None
    return person


def ensure_person(conn: psycopg.Connection, tenant_id: Id, user_id: Id, name: str) -> Person:
    """Return the user's person called `name`, creating them when new."""
    person = one(
        conn,
        Person,
        f"""insert into people (tenant_id, user_id, name) values (%s, %s, %s)
            on conflict (tenant_id, user_id, lower(name)) do update set updated_at = now()
            returning {_PERSON}""",
        (tenant_id, user_id, name),
    )
    assert person is not None
    return person


def date_by_call(
    conn: psycopg.Connection, tenant_id: Id, user_id: Id, tool_call_id: str
) -> NamedDate | None:
    """Return the date the tool call `tool_call_id` saved for one of this user's people."""
    return one(
        conn,
        NamedDate,
        """select d.id, d.kind, d.month, d.day, d.year, d.yearly, d.label, p.name
           from important_dates d
           join people p on p.tenant_id = d.tenant_id and p.id = d.person_id
           where d.tenant_id = %s and d.tool_call_id = %s and p.user_id = %s""",
        (tenant_id, tool_call_id, user_id),
    )


def save_date(
    conn: psycopg.Connection,
    tenant_id: Id,
    person_id: int,
    *,
    kind: str,
    month: int,
    day: int,
    year: int | None,
    yearly: bool,
    label: str,
    tool_call_id: str,
) -> SavedDate:
    """Save a person's date; the same date again takes the new year (if given) and recurrence."""
    saved = one(
        conn,
        SavedDate,
        f"""insert into important_dates (tenant_id, person_id, kind, month, day, year, yearly,
                label, tool_call_id)
            values (%s, %s, %s, %s, %s, %s, %s, %s, %s)
            on conflict (tenant_id, person_id, kind, month, day, label) do update set
                year = coalesce(excluded.year, important_dates.year),
                yearly = excluded.yearly, tool_call_id = excluded.tool_call_id
            returning {_DATE}""",
        (tenant_id, person_id, kind, month, day, year, yearly, label, tool_call_id),
    )
    assert saved is not None
    return saved


def dates_of_user(conn: psycopg.Connection, tenant_id: Id, user_id: Id) -> list[PersonDate]:
    """Return every saved date of the user's people (the caller picks the upcoming ones)."""
    return all_rows(
        conn,
        PersonDate,
        """select d.kind, d.month, d.day, d.year, d.yearly, d.label, p.name, p.relation
           from important_dates d
           join people p on p.tenant_id = d.tenant_id and p.id = d.person_id
           where p.tenant_id = %s and p.user_id = %s""",
        (tenant_id, user_id),
    )
