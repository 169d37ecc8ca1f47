-- Tenants, their WhatsApp users, conversations, every message in and out, and what the AI did.
create extension if not exists vector;

create table tenants (
    id                  uuid primary key default gen_random_uuid(),
    slug                text not null unique check (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name                text not null check (length(name) between 1 and 200),
    whatsapp_sender     text not null unique check (whatsapp_sender like 'whatsapp:%'),
    twilio_account_sid  text not null check (twilio_account_sid ~ '^AC[0-9a-zA-Z]{32}$'),
    twilio_auth_token   text not null check (length(twilio_auth_token) > 0),
    default_locale      text not null default 'pt-BR',
    timezone            text not null default 'America/Sao_Paulo',
    persona             text not null default '',
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now()
);

create table users (
    id            uuid primary key default gen_random_uuid(),
    tenant_id     uuid not null references tenants (id) on delete cascade,
    wa_id         text not null check (length(wa_id) > 0),
    address       text not null check (address like 'whatsapp:%'),
    profile_name  text,
    locale        text,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    unique (tenant_id, wa_id)
);

create table conversations (
    id               uuid primary key,
    tenant_id        uuid not null references tenants (id) on delete cascade,
    user_id          uuid not null references users (id) on delete cascade,
    state            text not null default 'ACTIVE'
                     check (state in ('ACTIVE', 'WAITING_USER', 'HANDOFF', 'CLOSED')),
    thread_id        text not null unique,
    last_inbound_at  timestamptz,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now()
);
create unique index conversations_one_open_per_user
    on conversations (tenant_id, user_id) where state <> 'CLOSED';

create table messages (
    id               bigint generated always as identity primary key,
    tenant_id        uuid not null references tenants (id) on delete cascade,
    conversation_id  uuid not null references conversations (id) on delete cascade,
    direction        text not null check (direction in ('inbound', 'outbound')),
    provider_sid     text,
    idempotency_key  text,
    kind             text not null default 'text',
    body             text not null default '',
    from_address     text not null,
    to_address       text not null,
    media            jsonb not null default '[]',
    payload          jsonb not null default '{}',
    status           text not null,
    error            text,
    correlation_id   text not null,
    created_at       timestamptz not null default now(),
    enqueued_at      timestamptz,
    processed_at     timestamptz,
    unique (tenant_id, provider_sid),
    unique (tenant_id, idempotency_key),
    check (direction = 'inbound' or idempotency_key is not null),
    check (direction = 'outbound' or provider_sid is not null)
);
create index messages_conversation_idx on messages (conversation_id, id);
create index messages_unenqueued_idx on messages (created_at)
    where enqueued_at is null and status in ('received', 'pending');

create table ai_results (
    id                   bigint generated always as identity primary key,
    tenant_id            uuid not null references tenants (id) on delete cascade,
    conversation_id      uuid not null references conversations (id) on delete cascade,
    thread_id            text not null,
    correlation_id       text not null,
    inbound_message_ids  bigint[] not null,
    reply                text,
    model                text,
    error                text,
    duration_ms          integer not null,
    created_at           timestamptz not null default now()
);
create index ai_results_conversation_idx on ai_results (conversation_id, id);
