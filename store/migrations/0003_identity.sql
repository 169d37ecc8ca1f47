-- Plans, subscriptions, feature flags and quotas; and tenant isolation enforced by PostgreSQL:
-- row-level security on every table that holds tenant data, for an application role that owns
-- nothing and cannot bypass it.

create table plans (
    id                uuid primary key default gen_random_uuid(),
    tenant_id         uuid not null references tenants (id) on delete cascade,
    slug              text not null check (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name              text not null check (length(name) between 1 and 200),
    features          text[] not null default '{}' check (features <@ array[
                          'finance', 'relationships', 'long_term_memory', 'audio_transcription',
                          'human_handoff', 'reminders']::text[]),
    messages_per_day  integer check (messages_per_day is null or messages_per_day >= 0),
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    unique (tenant_id, slug),
    unique (tenant_id, id)
);

alter table tenants
    add column default_plan_id uuid,
    add column auto_enroll boolean not null default true,
    add column trace_privacy text not null default 'full' check (trace_privacy in ('full', 'masked')),
    add column system_prompt text check (system_prompt is null or length(system_prompt) <= 20000),
    add constraint tenants_default_plan_fk foreign key (id, default_plan_id)
        references plans (tenant_id, id) on delete set null (default_plan_id);

alter table users
    add column enabled boolean not null default true,
    add column timezone text,
    -- References to a user name its tenant too, so no row can point into another tenant
    -- (foreign key checks do not see row-level security).
    add constraint users_tenant_user_key unique (tenant_id, id);

create table subscriptions (
    id            uuid primary key default gen_random_uuid(),
    tenant_id     uuid not null references tenants (id) on delete cascade,
    user_id       uuid not null unique,
    plan_id       uuid not null,
    status        text not null default 'active' check (status in ('active', 'past_due', 'cancelled')),
    period_start  timestamptz not null default now(),
    period_end    timestamptz check (period_end is null or period_end > period_start),
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    foreign key (tenant_id, plan_id) references plans (tenant_id, id) on delete restrict,
    foreign key (tenant_id, user_id) references users (tenant_id, id) on delete cascade
);

create table feature_overrides (
    id          uuid primary key default gen_random_uuid(),
    tenant_id   uuid not null references tenants (id) on delete cascade,
    user_id     uuid,
    feature     text not null check (feature in ('finance', 'relationships', 'long_term_memory',
                    'audio_transcription', 'human_handoff', 'reminders')),
    enabled     boolean not null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    unique nulls not distinct (tenant_id, user_id, feature),
    foreign key (tenant_id, user_id) references users (tenant_id, id) on delete cascade
);

create table usage_days (
    tenant_id         uuid not null references tenants (id) on delete cascade,
    user_id           uuid not null,
    day               date not null,
    messages          integer not null default 0,
    notice_sent       boolean not null default false,
    primary key (user_id, day),
    foreign key (tenant_id, user_id) references users (tenant_id, id) on delete cascade
);

create table admin_audit (
    id         bigint generated always as identity primary key,
    actor      text not null,
    action     text not null,
    tenant_id  uuid,
    detail     jsonb not null default '{}',
    at         timestamptz not null default now()
);

-- The scope of the current transaction: one tenant, or the audited platform path.
create function app_tenant() returns uuid language sql stable parallel safe as $$
    select nullif(current_setting('app.tenant_id', true), '')::uuid
$$;
create function app_platform() returns boolean language sql stable parallel safe as $$
    select coalesce(current_setting('app.platform', true), '') = 'on'
$$;

do $$
declare
    t text;
begin
    if not exists (select 1 from pg_roles where rolname = 'conversa_app') then
        create role conversa_app nologin nosuperuser nobypassrls noinherit;
    end if;
    foreach t in array array['users', 'conversations', 'messages', 'ai_results',
        'message_status_events', 'plans', 'subscriptions', 'feature_overrides', 'usage_days']
    loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format(
            'create policy tenant_isolation on %I using (tenant_id = app_tenant() or app_platform()) '
            'with check (tenant_id = app_tenant() or app_platform())', t);
    end loop;
    -- LangGraph's checkpoints: reachable only through thread ids that carry the tenant.
    foreach t in array array['checkpoints', 'checkpoint_blobs', 'checkpoint_writes'] loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format(
            'create policy tenant_isolation on %I '
            'using (thread_id like app_tenant()::text || '':%%'' or app_platform()) '
            'with check (thread_id like app_tenant()::text || '':%%'' or app_platform())', t);
    end loop;
end
$$;

-- LangGraph's store: namespaces start with the tenant id.
alter table store enable row level security;
alter table store force row level security;
create policy tenant_isolation on store
    using (prefix like app_tenant()::text || '%' or app_platform())
    with check (prefix like app_tenant()::text || '%' or app_platform());

alter table tenants enable row level security;
alter table tenants force row level security;
create policy tenant_isolation on tenants
    using (id = app_tenant() or app_platform())
    with check (id = app_tenant() or app_platform());

-- The audit trail is written by the platform path and read by platform admins only.
alter table admin_audit enable row level security;
alter table admin_audit force row level security;
create policy platform_only on admin_audit using (app_platform()) with check (app_platform());

grant usage on schema public to conversa_app;
grant select, insert, update, delete on all tables in schema public to conversa_app;
grant usage, select on all sequences in schema public to conversa_app;
revoke insert, update, delete on schema_migrations, checkpoint_migrations, store_migrations
    from conversa_app;
alter default privileges in schema public
    grant select, insert, update, delete on tables to conversa_app;
alter default privileges in schema public grant usage, select on sequences to conversa_app;

-- The two ways in that need no tenant yet, as narrow functions (they run as the owner):
-- finding the tenant a webhook is for, and the relay's claim of messages due a job.
create function tenant_by_sender(sender text) returns setof tenants
language plpgsql stable security definer set search_path = public as $$
begin
    perform set_config('app.platform', 'on', true);
    return query select * from tenants where whatsapp_sender = sender;
    perform set_config('app.platform', '', true);
end
$$;

create function claim_due_messages(outbox_min_age double precision, stale_after double precision,
                                   max_rows integer)
returns setof messages
language plpgsql volatile security definer set search_path = public as $$
begin
    perform set_config('app.platform', 'on', true);
    -- Three narrow, index-backed scans, so a backlog of unanswered messages costs nothing here.
    return query  -- inbound messages the webhook stored
        select * from messages
        where enqueued_at is null and status in ('received', 'pending') and direction = 'inbound'
        order by id limit max_rows
        for update skip locked;
    return query  -- replies no worker queued, at the head of their conversation's outbox
        select * from messages m
        where enqueued_at is null and status in ('received', 'pending')
          and direction = 'outbound'
          and created_at < now() - make_interval(secs => outbox_min_age)
          and not exists (
            select 1 from messages e where e.conversation_id = m.conversation_id
              and e.direction = 'outbound' and e.status in ('pending', 'sending')
              and e.id < m.id)
        order by id limit max_rows
        for update skip locked;
    return query  -- unfinished messages whose job went missing
        select * from messages
        where processed_at is null and status in ('received', 'pending', 'sending')
          and enqueued_at < now() - make_interval(secs => stale_after)
        order by enqueued_at, id limit max_rows
        for update skip locked;
    perform set_config('app.platform', '', true);
end
$$;

-- The webhook's one statement: scope to the tenant, then store message, user and conversation.
-- It runs with the caller's rights (row-level security applies); set_config(..., true) lasts
-- for this statement's own transaction only.
create function store_inbound_message(
    p_tenant uuid, p_sid text, p_wa_id text, p_from text, p_name text, p_enroll boolean,
    p_kind text, p_body text, p_to text, p_media jsonb, p_payload jsonb, p_correlation_id text)
returns setof messages
language plpgsql volatile security invoker set search_path = public as $$
begin
    perform set_config('app.tenant_id', p_tenant::text, true);
    return query
        with fresh as (
            select not exists (select 1 from messages x where x.tenant_id = p_tenant
                               and x.provider_sid = p_sid) as ok
        ), u as (
            insert into users as existing (tenant_id, wa_id, address, profile_name, enabled)
            select p_tenant, p_wa_id, p_from, p_name, p_enroll from fresh where fresh.ok
            on conflict (tenant_id, wa_id) do update
               set profile_name = coalesce(excluded.profile_name, existing.profile_name),
                   address = excluded.address,
                   updated_at = case when existing.profile_name is distinct from
                       coalesce(excluded.profile_name, existing.profile_name)
                       or existing.address <> excluded.address then now()
                       else existing.updated_at end
            returning existing.id
        ), c as (
            -- A conversation's LangGraph thread id carries its tenant: "<tenant>:<conversation>".
            insert into conversations as open (id, tenant_id, user_id, thread_id, last_inbound_at)
            select new.id, p_tenant, u.id, p_tenant::text || ':' || new.id::text, now()
            from u, (select gen_random_uuid() as id) as new
            on conflict (tenant_id, user_id) where state <> 'CLOSED'
            do update set last_inbound_at = now(), updated_at = now()
            returning open.id
        )
        insert into messages as m (tenant_id, conversation_id, direction, provider_sid, kind,
            body, from_address, to_address, media, payload, status, correlation_id)
        select p_tenant, c.id, 'inbound', p_sid, p_kind, p_body, p_from, p_to, p_media,
               p_payload, 'received', p_correlation_id
        from c
        on conflict (tenant_id, provider_sid) do nothing
        returning m.*;
end
$$;

create function mark_messages_enqueued(ids bigint[]) returns void
language plpgsql volatile security definer set search_path = public as $$
begin
    perform set_config('app.platform', 'on', true);
    update messages set enqueued_at = now() where id = any(ids);
    perform set_config('app.platform', '', true);
end
$$;

revoke execute on function tenant_by_sender(text), claim_due_messages(double precision,
    double precision, integer), mark_messages_enqueued(bigint[]) from public;
grant execute on function tenant_by_sender(text), claim_due_messages(double precision,
    double precision, integer), mark_messages_enqueued(bigint[]) to conversa_app;
