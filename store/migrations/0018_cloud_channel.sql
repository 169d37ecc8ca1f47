-- Meta's WhatsApp Cloud API as a tenant's provider (`channel = 'cloud'`): the tenant's phone
-- number id (the Graph API path it sends from), its WhatsApp Business Account id, the access
-- token it sends with and the app secret that signs Meta's webhooks. The two secrets are
-- write-only through the API and never logged.

alter table tenants
    add column cloud_phone_number_id text
        check (cloud_phone_number_id is null or cloud_phone_number_id ~ '^[0-9]{1,30}$'),
    add column cloud_business_account_id text
        check (cloud_business_account_id is null or cloud_business_account_id ~ '^[0-9]{1,30}$'),
    add column cloud_access_token text
        check (cloud_access_token is null or length(cloud_access_token) between 1 and 4096),
    add column cloud_app_secret text
        check (cloud_app_secret is null or length(cloud_app_secret) between 1 and 256);

-- One tenant per Cloud API number, as one tenant per WhatsApp sender.
create unique index tenants_cloud_phone_number_id on tenants (cloud_phone_number_id)
    where cloud_phone_number_id is not null;

-- A tenant speaks through the Cloud API only with what it takes: its number, token and secret.
alter table tenants add constraint tenants_cloud_complete check (
    channel <> 'cloud' or (cloud_phone_number_id is not null and cloud_access_token is not null
                           and cloud_app_secret is not null));
