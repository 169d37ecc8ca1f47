-- Replies with options (buttons or a list): an outbound message keeps the options it offered
-- (`choices`: its body, button label and options, `channels.choices.Choices.to_json`), and an
-- inbound message keeps the id of the option the user pressed (`choice`). The body of each is
-- what a person reads: the reply as numbered text, the pressed option's title.

alter table messages add column choices jsonb
    check (choices is null or (direction = 'outbound' and jsonb_typeof(choices) = 'object'));
alter table messages add column choice text
    check (choice is null or (direction = 'inbound' and length(choice) between 1 and 256));

-- The webhook's one statement (0015), with the pressed option's id; a function's parameters
-- cannot change in place, so it is made again.
drop function store_inbound_message(uuid, text, text, text, text, boolean, text, text, text,
    jsonb, jsonb, text);
create function store_inbound_message(
    p_tenant uuid, p_provider_message_id text, p_wa_id text, p_from text, p_name text,
    p_enroll boolean, p_kind text, p_body text, p_to text, p_media jsonb, p_payload jsonb,
    p_correlation_id text, p_choice text)
returns setof messages
language plpgsql volatile security invoker set search_path = public as $$
begin
    perform set_config('app.tenant_id', p_tenant::text, true);
    return query
        with fresh as (
            select not exists (select 1 from messages x where x.tenant_id = p_tenant
                               and x.provider_message_id = p_provider_message_id) as ok
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
        insert into messages as m (tenant_id, conversation_id, direction, provider_message_id,
            kind, body, from_address, to_address, media, payload, status, correlation_id, choice)
        select p_tenant, c.id, 'inbound', p_provider_message_id, p_kind, p_body, p_from, p_to,
               p_media, p_payload, 'received', p_correlation_id, p_choice
        from c
        on conflict (tenant_id, provider_message_id) do nothing
        returning m.*;
end
$$;
