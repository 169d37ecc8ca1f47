-- What the specialists' tools keep for a user: money in and out, the people in their life and
-- the dates that matter to them, and reminders delivered as WhatsApp messages.
--
-- Every row a tool writes carries the model's tool call id, unique per tenant: a run resumed
-- after a crash re-executes its pending tool call with the same id, and finds its first write
-- instead of making a second one.
--
-- Finance entries are deleted softly (`deleted_at`, with the deleting call's id): a replayed
-- delete answers as the first one did, and the trail stays for support. Reads skip them.

create table finance_entries (
    id                       bigint generated always as identity primary key,
    tenant_id                uuid not null references tenants (id) on delete cascade,
    user_id                  uuid not null,
    kind                     text not null check (kind in ('expense', 'income')),
    amount                   numeric(14, 2) not null check (amount > 0),
    currency                 char(3) not null check (currency ~ '^[A-Z]{3}$'),
    category                 text not null check (length(category) between 1 and 60),
    description              text not null default '' check (length(description) <= 500),
    occurred_on              date not null,
    tool_call_id             text,
    created_at               timestamptz not null default now(),
    deleted_at               timestamptz,
    deleted_by_tool_call_id  text,
    unique (tenant_id, tool_call_id),
    foreign key (tenant_id, user_id) references users (tenant_id, id) on delete cascade
);
-- Balances, categories and the recent list: one user's live entries by date.
create index finance_entries_user_date_idx
    on finance_entries (tenant_id, user_id, occurred_on desc, id desc) where deleted_at is null;

create table people (
    id                 bigint generated always as identity primary key,
    tenant_id          uuid not null references tenants (id) on delete cascade,
    user_id            uuid not null,
    name               text not null check (length(btrim(name)) between 1 and 100),
    relation           text not null default '' check (length(relation) <= 100),
    notes              text not null default '' check (length(notes) <= 2000),
    last_tool_call_id  text,
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now(),
    unique (tenant_id, id),
    foreign key (tenant_id, user_id) references users (tenant_id, id) on delete cascade
);
create unique index people_user_name_key on people (tenant_id, user_id, lower(name));

create table important_dates (
    id            bigint generated always as identity primary key,
    tenant_id     uuid not null references tenants (id) on delete cascade,
    person_id     bigint not null,
    kind          text not null check (kind in ('birthday', 'anniversary', 'other')),
    month         smallint not null check (month between 1 and 12),
    day           smallint not null check (day between 1 and
                      case when month = 2 then 29 when month in (4, 6, 9, 11) then 30 else 31 end),
    -- The year it happened (a birth year, a wedding year), or of the one occurrence when not
    -- yearly.
    year          integer check (year is null or year between 1900 and 2200),
    yearly        boolean not null default true,
    label         text not null default '' check (length(label) <= 200),
    tool_call_id  text,
    created_at    timestamptz not null default now(),
    check (yearly or year is not null),
    unique (tenant_id, tool_call_id),
    -- The same date told twice updates the first; its prefix serves "dates of these people".
    unique (tenant_id, person_id, kind, month, day, label),
    foreign key (tenant_id, person_id) references people (tenant_id, id) on delete cascade
);

create table reminders (
    id                         bigint generated always as identity primary key,
    tenant_id                  uuid not null references tenants (id) on delete cascade,
    user_id                    uuid not null,
    -- Where it went: the user's latest conversation at delivery time.
    conversation_id            uuid references conversations (id) on delete set null,
    text                       text not null check (length(btrim(text)) between 1 and 500),
    due_at                     timestamptz not null,
    -- delivered: its message is in the outbox (the message row tracks WhatsApp's delivery).
    status                     text not null default 'scheduled'
                               check (status in ('scheduled', 'delivered', 'cancelled', 'failed')),
    delivered_message_id       bigint references messages (id) on delete set null,
    error                      text,
    correlation_id             text not null,
    tool_call_id               text,
    cancelled_by_tool_call_id  text,
    created_at                 timestamptz not null default now(),
    -- When a delivery job was last queued: at scheduling (for due_at), or by the sweeper.
    enqueued_at                timestamptz,
    finished_at                timestamptz,
    unique (tenant_id, tool_call_id),
    foreign key (tenant_id, user_id) references users (tenant_id, id) on delete cascade
);
create index reminders_user_due_idx on reminders (tenant_id, user_id, due_at)
    where status = 'scheduled';
-- The sweeper's scan for reminders whose job went missing.
create index reminders_due_idx on reminders (due_at) where status = 'scheduled';

alter table messages drop constraint messages_purpose_check,
    add constraint messages_purpose_check
        check (purpose in ('reply', 'notice', 'opt_out', 'opt_in', 'reminder'));

do $$
declare
    t text;
begin
    foreach t in array array['finance_entries', 'people', 'important_dates', 'reminders'] loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format(
            'create policy tenant_isolation on %I using (tenant_id = app_tenant() or app_platform()) '
            'with check (tenant_id = app_tenant() or app_platform())', t);
    end loop;
end
$$;

-- The relay's sweep, across tenants: scheduled reminders overdue by `grace` seconds whose
-- only job was queued before they fell due (Redis lost it), or whose sweep job is
-- `stale_after` seconds old. Claimed rows get `enqueued_at = now()`, in the caller's
-- transaction: if queueing the jobs fails, the caller rolls back and they stay due.
create function claim_due_reminders(grace double precision, stale_after double precision,
                                    max_rows integer)
returns setof reminders
language plpgsql volatile security definer set search_path = public as $$
begin
    perform set_config('app.platform', 'on', true);
    return query
        with due as (
            select r.id from reminders r
            where r.status = 'scheduled' and r.due_at < now() - make_interval(secs => grace)
              and (r.enqueued_at is null or r.enqueued_at < r.due_at
                   or r.enqueued_at < now() - make_interval(secs => stale_after))
            order by r.due_at, r.id limit max_rows
            for update skip locked
        )
        update reminders r set enqueued_at = now() from due where r.id = due.id
        returning r.*;
    perform set_config('app.platform', '', true);
end
$$;

revoke execute on function claim_due_reminders(double precision, double precision, integer)
    from public;
grant execute on function claim_due_reminders(double precision, double precision, integer)
    to conversa_app;
