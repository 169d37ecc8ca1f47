-- The WhatsApp channel under real traffic: opt-out, delivery statuses, the 24-hour window's
-- template, typing indicators, per-part outbound replies.

alter table users add column opted_out_at timestamptz;

alter table tenants
    add column typing_indicator boolean not null default true,
    add column closed_window_template_sid text
        check (closed_window_template_sid is null or closed_window_template_sid ~ '^HX[0-9a-fA-F]{32}$'),
    add column closed_window_template_variables jsonb not null default '{}'
        check (jsonb_typeof(closed_window_template_variables) = 'object');

alter table messages
    add column purpose text not null default 'reply'
        check (purpose in ('reply', 'notice', 'opt_out', 'opt_in')),
    add column error_code integer,
    add column template_sid text,
    add column attempts integer not null default 0,
    add column status_updated_at timestamptz;

-- Twilio's delivery statuses only move forward: a late "sent" never overwrites "delivered".
create function message_status_rank(status text) returns integer
language sql immutable parallel safe as $$
    select case status
        when 'pending' then 0
        when 'accepted' then 1 when 'scheduled' then 1 when 'queued' then 1
        when 'sending' then 2
        when 'sent' then 3
        when 'delivered' then 4 when 'undelivered' then 4 when 'failed' then 4
        when 'read' then 5
        when 'suppressed' then 6 when 'canceled' then 6
        else -1
    end
$$;

create table message_status_events (
    id           bigint generated always as identity primary key,
    tenant_id    uuid not null references tenants (id) on delete cascade,
    message_id   bigint references messages (id) on delete cascade,
    provider_sid text not null,
    status       text not null,
    error_code   integer,
    applied      boolean not null,
    received_at  timestamptz not null default now()
);
create index message_status_events_message_idx on message_status_events (message_id, id);

create index messages_unanswered_idx on messages (conversation_id, id)
    where direction = 'inbound' and processed_at is null;
create index messages_outbox_idx on messages (conversation_id, id)
    where direction = 'outbound' and status = 'pending';
-- The relay's "due a job" scan: unfinished messages by when their job was queued.
create index messages_unfinished_idx on messages (enqueued_at, id)
    where processed_at is null and status in ('received', 'pending');
