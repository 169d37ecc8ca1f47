-- Users' data rights (LGPD / GDPR): the record an erasure leaves, and what a user who asks
-- for their data over WhatsApp is told.
--
-- An erasure record says who erased a user of the tenant, when, and how many rows of each
-- table went. It holds nothing about the user (no id, number, name or text): once erased,
-- the service cannot tell whom a record was about, only that the request was carried out.
-- `reference` is the tenant's own ticket number for the request, if it gives one.

create table data_erasures (
    id                bigint generated always as identity primary key,
    tenant_id         uuid not null references tenants (id) on delete cascade,
    erased_by         text not null check (length(erased_by) between 1 and 200),
    erased_by_role    text not null,
    reference         text check (reference ~ '^[A-Za-z0-9._:/#-]{1,100}$'),
    counts            jsonb not null check (jsonb_typeof(counts) = 'object'),
    erased_at         timestamptz not null default now(),
    -- Set once the user's queued jobs and cached profile were removed from Redis, after the
    -- database commit; null means that cleanup did not finish (the jobs then find nothing).
    jobs_removed      integer check (jobs_removed is null or jobs_removed >= 0),
    redis_cleaned_at  timestamptz
);
create index data_erasures_tenant_idx on data_erasures (tenant_id, id);

alter table data_erasures enable row level security;
alter table data_erasures force row level security;
create policy tenant_isolation on data_erasures
    using (tenant_id = app_tenant() or app_platform())
    with check (tenant_id = app_tenant() or app_platform());
grant select, insert, update on data_erasures to conversa_app;
-- The trail is not the app's to delete (deleting the tenant still takes it along).
revoke delete, truncate on data_erasures from conversa_app;
grant usage, select on sequence data_erasures_id_seq to conversa_app;

-- "apagar meus dados" / "delete my data" is answered with this text (null: the default notice).
alter table tenants
    add column data_request_message text check (length(data_request_message) <= 1000);
