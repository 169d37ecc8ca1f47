-- Human handoff: conversation states with every transition kept, staff claims, staff replies,
-- and the tenant's handoff settings.
--
-- ACTIVE        the assistant answers.
-- HANDOFF       a person has it; the user waits for staff (the auto-return clock runs).
-- WAITING_USER  a person has it; staff answered and wait for the user.
-- CLOSED        ended; the user's next message opens a new conversation (a new thread).

alter table tenants
    add column handoff_message text check (length(handoff_message) <= 1000),
    add column handoff_return_message text check (length(handoff_return_message) <= 1000),
    add column handoff_auto_return_seconds integer not null default 1800
        check (handoff_auto_return_seconds >= 0);

alter table conversations
    add column state_changed_at timestamptz not null default now(),
    add column handoff_reason text,
    add column handoff_route text,
    add column handoff_at timestamptz,
    add column claimed_by text,
    add column claimed_at timestamptz,
    add column staff_active_at timestamptz;

-- The support queue: one tenant's conversations with a person, oldest handoff first.
create index conversations_support_queue_idx on conversations (tenant_id, handoff_at)
    where state in ('HANDOFF', 'WAITING_USER');

create table conversation_transitions (
    id               bigint generated always as identity primary key,
    tenant_id        uuid not null references tenants (id) on delete cascade,
    conversation_id  uuid not null references conversations (id) on delete cascade,
    from_state       text not null,
    to_state         text not null
                     check (to_state in ('ACTIVE', 'WAITING_USER', 'HANDOFF', 'CLOSED')),
    actor_kind       text not null check (actor_kind in ('user', 'assistant', 'staff', 'system')),
    actor            text not null,
    reason           text not null default '' check (length(reason) <= 1000),
    created_at       timestamptz not null default now()
);
create index conversation_transitions_conversation_idx
    on conversation_transitions (conversation_id, id);

alter table conversation_transitions enable row level security;
alter table conversation_transitions force row level security;
create policy tenant_isolation on conversation_transitions
    using (tenant_id = app_tenant() or app_platform())
    with check (tenant_id = app_tenant() or app_platform());

-- Staff replies are outbound messages with a purpose of their own and their author.
alter table messages drop constraint messages_purpose_check,
    add constraint messages_purpose_check
        check (purpose in ('reply', 'notice', 'opt_out', 'opt_in', 'reminder', 'staff', 'handoff'));
alter table messages add column sent_by text;
