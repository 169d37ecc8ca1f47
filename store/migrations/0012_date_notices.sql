-- Date notices: the WhatsApp message a user gets shortly before one of their saved dates
-- ("🎂 Amanhã é o aniversário da sua mãe (12/12).").
--
-- One row per important date and occurrence, written in the same transaction as the notice's
-- outbox message: a second sweep, or two workers racing, meet the unique key and send nothing
-- more. A deleted date (or an erased user) takes its notices with it.

-- References to a date name its tenant too, so no notice can point into another tenant.
alter table important_dates add constraint important_dates_tenant_id_key unique (tenant_id, id);

create table date_notices (
    id                 bigint generated always as identity primary key,
    tenant_id          uuid not null references tenants (id) on delete cascade,
    important_date_id  bigint not null,
    -- The day the date falls on this time (the 28th of February for the 29th, in other years).
    occurs_on          date not null,
    message_id         bigint references messages (id) on delete set null,
    created_at         timestamptz not null default now(),
    constraint date_notices_once_key unique (important_date_id, occurs_on),
    foreign key (tenant_id, important_date_id) references important_dates (tenant_id, id)
        on delete cascade
);

-- Erasing a user deletes their messages; `on delete set null` then finds the notices by message.
create index date_notices_message_id_idx on date_notices (message_id)
    where message_id is not null;

alter table date_notices enable row level security;
alter table date_notices force row level security;
create policy tenant_isolation on date_notices
    using (tenant_id = app_tenant() or app_platform())
    with check (tenant_id = app_tenant() or app_platform());
grant select, insert, update, delete on date_notices to conversa_app;
grant usage, select on sequence date_notices_id_seq to conversa_app;

alter table messages drop constraint messages_purpose_check,
    add constraint messages_purpose_check
        check (purpose in ('reply', 'notice', 'opt_out', 'opt_in', 'reminder', 'staff', 'handoff',
                           'date_notice'));
