-- Long-term memory: LangGraph's vector table (created by the store's setup, which runs before
-- these files) gets the same tenant rule as `store`: namespaces start with the tenant id.
alter table store_vectors enable row level security;
alter table store_vectors force row level security;
create policy tenant_isolation on store_vectors
    using (prefix like app_tenant()::text || '%' or app_platform())
    with check (prefix like app_tenant()::text || '%' or app_platform());

grant select, insert, update, delete on store, store_vectors to conversa_app;
revoke insert, update, delete on vector_migrations from conversa_app;

-- One user's search is an exact scan of that user's vectors (no global approximate index: see
-- store/memory.py). The primary key (prefix, key, field_name) finds them, but each row is then
-- a heap page of its own (memories arrive over time, users interleaved). A covering index
-- keeps a user's vectors together and answers from the index alone: at 100k memories,
-- bench/bench_memory.py measured p99 6.5 -> 3.6 ms (100 memories a user) and p50 10.4 -> 7.5
-- ms (2000). A btree entry holds at most ~2.7 kB, so only vectors up to 600 dimensions fit;
-- larger ones (1536 for OpenAI's) use the primary key alone.
do $$
begin
    if (select atttypmod from pg_attribute
        where attrelid = 'store_vectors'::regclass and attname = 'embedding') <= 600 then
        create index store_vectors_namespace_scan on store_vectors (prefix, field_name)
            include (key, embedding);
    end if;
end
$$;

-- A deleted user (or tenant, whose users cascade) takes their store namespaces along:
-- memories are personal data.
create function forget_user_store() returns trigger
language plpgsql security invoker set search_path = public as $$
begin
    delete from store
    where prefix like old.tenant_id::text || '.' || old.id::text || '.%';
    return old;
end
$$;

create trigger users_forget_store after delete on users
    for each row execute function forget_user_store();
