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
    return query
        select * from messages m
        where status in ('received', 'pending') and processed_at is null
          and (
            (direction = 'inbound' and enqueued_at is null)
            or (direction = 'outbound' and enqueued_at is null
                and created_at < now() - make_interval(secs => outbox_min_age))
            or enqueued_at < now() - make_interval(secs => stale_after)
          )
          and not (direction = 'outbound' and exists (
            select 1 from messages e where e.conversation_id = m.conversation_id
              and e.direction = 'outbound' and e.status = 'pending' and e.id < m.id))
        order by id limit max_rows
        for update skip locked;
    perform set_config('app.platform', '', true);
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
