-- Budgets: what a tenant lets its assistant spend, per day and per month, in model tokens and in
-- money, for the whole tenant or for each user (of one plan, or of every plan). Every model call
-- holds its estimated cost against the budgets that apply before it runs (`budget_holds`), and
-- settles with the real usage after (`budget_counters` and one `usage_ledger` row). A hold a
-- killed worker never settled stops counting when it expires.

alter table tenants
    add column budget_exhausted text not null default 'notice'
        check (budget_exhausted in ('notice', 'cheaper_model', 'general_only')),
    add column budget_cheaper_model text check (budget_cheaper_model is null
        or length(budget_cheaper_model) between 1 and 200),
    add column budget_alert_url text check (budget_alert_url is null
        or (budget_alert_url ~ '^https?://' and length(budget_alert_url) <= 2000));

create table budgets (
    id          uuid primary key default gen_random_uuid(),
    tenant_id   uuid not null references tenants (id) on delete cascade,
    scope       text not null check (scope in ('tenant', 'user')),
    plan_id     uuid,
    period      text not null check (period in ('day', 'month')),
    max_tokens  bigint check (max_tokens is null or max_tokens >= 0),
    max_cost    numeric(14, 6) check (max_cost is null or max_cost >= 0),
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    check (max_tokens is not null or max_cost is not null),
    check (scope = 'user' or plan_id is null),
    unique nulls not distinct (tenant_id, scope, plan_id, period),
    unique (tenant_id, id),
    foreign key (tenant_id, plan_id) references plans (tenant_id, id) on delete cascade
);

-- What one budget's subject (the tenant, or one user) has spent in one period.
create table budget_counters (
    tenant_id     uuid not null references tenants (id) on delete cascade,
    budget_id     uuid not null,
    subject_id    uuid not null,
    period_start  date not null,
    used_tokens   bigint not null default 0,
    used_cost     numeric(14, 6) not null default 0,
    alerted       smallint not null default 0 check (alerted in (0, 80, 100)),
    primary key (budget_id, subject_id, period_start),
    foreign key (tenant_id, budget_id) references budgets (tenant_id, id) on delete cascade
);

-- Estimated costs held by model calls and transcriptions that have not finished yet.
create table budget_holds (
    hold_id       uuid not null,
    tenant_id     uuid not null references tenants (id) on delete cascade,
    budget_id     uuid not null,
    subject_id    uuid not null,
    period_start  date not null,
    tokens        bigint not null default 0,
    cost          numeric(14, 6) not null default 0,
    expires_at    timestamptz not null,
    primary key (hold_id, budget_id),
    foreign key (budget_id, subject_id, period_start)
        references budget_counters (budget_id, subject_id, period_start) on delete cascade
);
create index budget_holds_counter on budget_holds (budget_id, subject_id, period_start);

-- What was spent, one row per model call, transcription or outbound message.
create table usage_ledger (
    id              bigint generated always as identity primary key,
    tenant_id       uuid not null references tenants (id) on delete cascade,
    user_id         uuid,
    at              timestamptz not null default now(),
    day             date not null,
    kind            text not null check (kind in ('model', 'transcription', 'send')),
    route           text,
    model           text,
    input_tokens    bigint not null default 0 check (input_tokens >= 0),
    output_tokens   bigint not null default 0 check (output_tokens >= 0),
    audio_seconds   numeric(10, 2) not null default 0 check (audio_seconds >= 0),
    parts           integer not null default 0 check (parts >= 0),
    cost            numeric(14, 6) not null default 0 check (cost >= 0),
    degraded        boolean not null default false,
    correlation_id  text,
    -- An erased user's spending stays the tenant's, without the user.
    foreign key (tenant_id, user_id) references users (tenant_id, id) on delete set null (user_id)
);
create index usage_ledger_tenant_day on usage_ledger (tenant_id, day);

do $$
declare t text;
begin
    foreach t in array array['budgets', 'budget_counters', 'budget_holds', 'usage_ledger'] loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format(
            'create policy tenant_isolation on %I using (tenant_id = app_tenant() or app_platform()) '
            'with check (tenant_id = app_tenant() or app_platform())', t);
        execute format('grant select, insert, update, delete on %I to conversa_app', t);
    end loop;
end
$$;
grant usage, select on sequence usage_ledger_id_seq to conversa_app;
