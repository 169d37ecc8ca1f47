-- A tenant on Meta's Cloud API needs no Twilio account: the Twilio credentials are required
-- only while the tenant speaks through Twilio, as the Cloud ones only through the Cloud API
-- (0018). The formats checked since 0001 still hold for whatever is stored.

alter table tenants alter column twilio_account_sid drop not null,
                    alter column twilio_auth_token drop not null;

alter table tenants add constraint tenants_twilio_complete check (
    channel <> 'twilio' or (twilio_account_sid is not null and twilio_auth_token is not null));
