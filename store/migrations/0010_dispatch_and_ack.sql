-- What the relay and the webhook's ack came to need after 0002 and 0003 had landed (those stay
-- as they first ran): a state of our own for a send under way, the relay's three narrow scans,
-- and the webhook's one-statement store. Written so that a database that ran an earlier draft
-- of 0003 (with these functions already in it) converges to the same place.

-- A send under way is 'dispatching', ours alone. It was 'sending', which is also a status
-- Twilio reports: a late "sending" callback made a message Twilio already had look unsent.
-- ('dispatching' ranks below every Twilio status, so Twilio's answer always moves past it.)
update messages set status = 'dispatching'
    where direction = 'outbound' and status = 'sending' and processed_at is null;

drop index if exists messages_outbox_idx;
create index messages_outbox_idx on messages (conversation_id, id)
    where direction = 'outbound' and status in ('pending', 'dispatching');
drop index if exists messages_unfinished_idx;
create index messages_unfinished_idx on messages (enqueued_at, id)
    where processed_at is null and status in ('received', 'pending', 'dispatching');

create or replace function claim_due_messages(
    outbox_min_age double precision, stale_after double precision,
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
              and e.direction = 'outbound' and e.status in ('pending', 'dispatching')
              and e.id < m.id)
        order by id limit max_rows
        for update skip locked;
    return query  -- unfinished messages whose job went missing
        select * from messages
        where processed_at is null and status in ('received', 'pending', 'dispatching')
          and enqueued_at < now() - make_interval(secs => stale_after)
        order by enqueued_at, id limit max_rows
        for update skip locked;
    perform set_config('app.platform', '', true);
end
$$;

-- The webhook's one statement: scope to the tenant, then store message, user and conversation.
-- It runs with the caller's rights (row-level security applies); set_config(..., true) lasts
-- for this statement's own transaction only.
create or replace function store_inbound_message(
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
