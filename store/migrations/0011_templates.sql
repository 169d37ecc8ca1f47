-- WhatsApp message templates per purpose: what goes out when the 24-hour window is closed.
--
-- A tenant registers, for each purpose and language, the Twilio Content template (HX...) that
-- WhatsApp approved, with its approved text (`body`, Twilio's numbered placeholders {{1}},
-- {{2}}...) and which named variable of the message fills each placeholder (`variables`, e.g.
-- {"1": "text", "2": "when"}). Only an 'approved' template is ever sent.
--
-- Outbound messages carry their named variables in `messages.template_variables` (a reminder:
-- its text and time; a staff reply: the staff member's words and name).
--
-- The old tenant columns (closed_window_template_sid / _variables: one template with fixed
-- values) stay as the legacy fallback for the 're_engagement' purpose only.

create table message_templates (
    id                uuid primary key default gen_random_uuid(),
    tenant_id         uuid not null references tenants (id) on delete cascade,
    purpose           text not null
                      check (purpose in ('reminder', 'staff_followup', 'date_notice',
                                         're_engagement')),
    language          text not null check (language ~ '^[a-z]{2}(-[A-Z]{2})?$'),
    content_sid       text not null check (content_sid ~ '^HX[0-9a-fA-F]{32}$'),
    body              text not null check (length(body) between 1 and 1024),
    variables         jsonb not null default '{}' check (jsonb_typeof(variables) = 'object'),
    status            text not null default 'pending'
                      check (status in ('draft', 'pending', 'approved', 'rejected', 'paused',
                                        'disabled')),
    rejection_reason  text check (length(rejection_reason) <= 1000),
    status_checked_at timestamptz,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    constraint message_templates_purpose_language_key unique (tenant_id, purpose, language)
);

alter table message_templates enable row level security;
alter table message_templates force row level security;
create policy tenant_isolation on message_templates
    using (tenant_id = app_tenant() or app_platform())
    with check (tenant_id = app_tenant() or app_platform());
grant select, insert, update, delete on message_templates to conversa_app;

alter table messages
    add column template_variables jsonb not null default '{}'
        check (jsonb_typeof(template_variables) = 'object');
