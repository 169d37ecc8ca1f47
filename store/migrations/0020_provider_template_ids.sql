-- A template's id is the tenant's provider's: Twilio's Content SID (HX...), or the template's
-- name on Meta's WhatsApp Cloud API (1 to 512 lowercase letters, digits and underscores). The
-- API checks which one against the tenant's channel (`channels.templates.template_id_problem`);
-- the database accepts either form (its regular expressions repeat at most 255 times, hence
-- the length check).

alter table message_templates drop constraint message_templates_content_sid_check;
alter table message_templates add constraint message_templates_content_sid_check
    check (content_sid ~ '^HX[0-9a-fA-F]{32}$'
           or (content_sid ~ '^[a-z0-9_]+$' and length(content_sid) <= 512));

alter table tenants drop constraint tenants_closed_window_template_sid_check;
alter table tenants add constraint tenants_closed_window_template_sid_check
    check (closed_window_template_sid is null
           or closed_window_template_sid ~ '^HX[0-9a-fA-F]{32}$'
           or (closed_window_template_sid ~ '^[a-z0-9_]+$'
               and length(closed_window_template_sid) <= 512));
