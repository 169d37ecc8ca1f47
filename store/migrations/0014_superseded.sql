-- A turn whose reply was overtaken by newer messages is folded into the next turn: its reply
-- is kept here for auditors but never sent (the inbound messages end as 'superseded').
alter table ai_results
    add column superseded boolean not null default false;
