-- What each graph run decided and did, for people auditing the assistant: the route and its
-- reason, every tool call with its arguments and result, and the tokens it cost.
alter table ai_results
    add column route              text,
    add column route_reason       text,
    add column tool_calls         jsonb not null default '[]'::jsonb,
    add column prompt_tokens      integer not null default 0 check (prompt_tokens >= 0),
    add column completion_tokens  integer not null default 0 check (completion_tokens >= 0),
    add column interrupted        boolean not null default false;

create index ai_results_route_idx on ai_results (tenant_id, route, created_at);
