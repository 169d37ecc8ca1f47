"""The webhook's group commit: concurrent acks share a transaction; one bad row fails only its
own request, and a batch the database could not take fails every request in it.

The requests run concurrently on one event loop against the app (httpx's ASGI transport, the
lifespan run by hand), as uvicorn would run them. To know which requests share a batch, a test
holds the committer: a first request is left blocked on a row lock taken here, so everything
posted meanwhile waits, and goes together as the next batch once the lock is let go.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import httpx
import psycopg
from fastapi import FastAPI
from prometheus_client import REGISTRY

from channels.sandbox.twilio import TwilioSandbox
from channels.twilio.inbound import sign
from server.app import create_app
from server.services import Services
from server.settings import Settings
from store import tenants
from store.records import Tenant
from tests.conftest import inbound_form, rows

T = TypeVar("T")
BLOCKER = "whatsapp:+5511900000001"
FAIL_AT_COMMIT = "this one fails at commit"
POISON = "this one is over a database limit"


def _at_commit(action: str) -> str:
    """A real failure at COMMIT: a deferred constraint trigger that does `action` as the
    transaction holding a FAIL_AT_COMMIT message commits."""
    return f"""
create function ack_test_at_commit() returns trigger language plpgsql security definer as $$
begin
    {action};
    return null;
end $$;
create constraint trigger ack_test_at_commit after insert on messages
    deferrable initially deferred for each row
    when (new.body = '{FAIL_AT_COMMIT}') execute function ack_test_at_commit();
"""


# The row's own fault: the commit fails on it, the connection stays up.
_ROW_FAILS_AT_COMMIT = _at_commit("raise exception 'injected failure at commit'")
# The batch's: the server ends the connection during the commit (as a crash or a failover would).
_CONNECTION_LOST_AT_COMMIT = _at_commit("perform pg_terminate_backend(pg_backend_pid())")
_REMOVE_AT_COMMIT = "drop function ack_test_at_commit() cascade"

# An operational error (SQLSTATE class 54, as an index row over the size limit raises) that
# one row's insert causes, in the batch's statement.
_POISON = f"""
create function ack_test_poison() returns trigger language plpgsql as $$
begin
    raise exception 'injected: index row size exceeds maximum' using errcode = '54000';
end $$;
create trigger ack_test_poison before insert on messages
    for each row when (new.body = '{POISON}') execute function ack_test_poison();
"""
_REMOVE_POISON = "drop function ack_test_poison() cascade"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _batches(outcome: str) -> tuple[float, float]:
    """How many batches ended with `outcome` so far, and how many messages they held."""
    return (
        _sample("conversa_webhook_ack_batch_size_count", outcome=outcome),
        _sample("conversa_webhook_ack_batch_size_sum", outcome=outcome),
    )


def _duplicates() -> float:
    return _sample("conversa_webhook_requests_total", webhook="inbound", outcome="duplicate")


def _run(settings: Settings, scenario: Callable[[FastAPI, httpx.AsyncClient], Awaitable[T]]) -> T:
    """Run `scenario` against the app, its lifespan running, on an event loop of its own."""

    async def main() -> T:
        app = create_app(settings, relay=False)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                return await scenario(app, c)

    return asyncio.run(main())


async def _post(
    client: httpx.AsyncClient, settings: Settings, tenant: Tenant, form: dict[str, str]
) -> httpx.Response:
    url = settings.public_url("/webhooks/inbound")
    headers = {"X-Twilio-Signature": sign(tenant.twilio_auth_token, url, form)}
    return await client.post("/webhooks/inbound", data=form, headers=headers)


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.01)
    except TimeoutError as exc:
        raise AssertionError(f"timed out waiting for {what}") from exc


@asynccontextmanager
async def _committer_held(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, tenant: Tenant
) -> AsyncIterator[None]:
    """Keep the group commit busy with one blocked batch; let it go on exit.

    The blocked batch's message (from BLOCKER) is answered 200 once it is let go.
    """
    assert settings.database_url
    first = await _post(client, settings, tenant, inbound_form(tenant, "primeira", user=BLOCKER))
    assert first.status_code == 200, first.text
    async with await psycopg.AsyncConnection.connect(settings.database_url) as lock:
        await lock.execute("select 1 from users where address = %s for update", (BLOCKER,))
        blocked = asyncio.create_task(
            _post(client, settings, tenant, inbound_form(tenant, "segunda", user=BLOCKER))
        )

        async def waits_on_the_lock() -> bool:
            async with await psycopg.AsyncConnection.connect(settings.database_url or "") as conn:
                cur = await conn.execute(
                    "select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
                    "and datname = current_database()"
                )
                return (await cur.fetchone() or (0,))[0] == 1

        await _until(waits_on_the_lock, "the first batch to wait on the lock")
        try:
            yield
        finally:
            await lock.rollback()
            assert (await blocked).status_code == 200


def _waiting(app: FastAPI) -> int:
    services: Services = app.state.services
    assert services.acks is not None
    return services.acks.waiting


def _one_batch(
    settings: Settings, tenant: Tenant, forms: list[dict[str, str]]
) -> list[httpx.Response]:
    """Post `forms` at once so that they go together as one batch; return the answers."""

    async def batch(app: FastAPI, client: httpx.AsyncClient) -> list[httpx.Response]:
        async with _committer_held(app, client, settings, tenant):
            posts = [asyncio.create_task(_post(client, settings, tenant, f)) for f in forms]

            async def all_wait() -> bool:
                return _waiting(app) == len(forms)

            await _until(all_wait, "every post to wait for the next batch")
        return list(await asyncio.gather(*posts))

    return _run(settings, batch)


def _injected(settings: Settings, sql: str) -> None:
    """Run `sql` (an injected failure) in the test database."""
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(sql)


def _retried_twice(settings: Settings, tenant: Tenant, forms: list[dict[str, str]]) -> list[int]:
    """Post `forms` as Twilio retries them (same MessageSid, same signature), twice over."""

    async def retries(app: FastAPI, client: httpx.AsyncClient) -> list[int]:
        first = await asyncio.gather(*(_post(client, settings, tenant, f) for f in forms))
        again = await asyncio.gather(*(_post(client, settings, tenant, f) for f in forms))
        return [r.status_code for r in (*first, *again)]

    return _run(settings, retries)


def _stored_once(settings: Settings, sids: list[str]) -> None:
    assert rows(
        settings,
        "select provider_message_id, count(*) from messages where provider_message_id = any(%s) "
        "group by 1 order by 1",
        sids,
    ) == sorted((sid, 1) for sid in sids)


def test_a_failed_commit_fails_every_request_of_its_batch_and_the_retries_store_once(
    settings: Settings, tenant: Tenant
) -> None:
    users = [f"whatsapp:+55119100000{n:02d}" for n in range(6)]
    forms = [inbound_form(tenant, f"mensagem {n}", user=user) for n, user in enumerate(users)]
    forms[2] = inbound_form(tenant, FAIL_AT_COMMIT, user=users[2])
    sids = [form["MessageSid"] for form in forms]
    failed_before = _batches("failed")
    _injected(settings, _CONNECTION_LOST_AT_COMMIT)
    try:
        responses = _one_batch(settings, tenant, forms)
    finally:
        _injected(settings, _REMOVE_AT_COMMIT)

    # The connection went down in the commit: no request is told its message is stored, and
    # none is stored again row by row on a connection that is gone.
    assert [r.status_code for r in responses] == [503] * len(forms)
    assert all(r.headers["Retry-After"] for r in responses)
    failed = _batches("failed")
    assert (failed[0] - failed_before[0], failed[1] - failed_before[1]) == (1, len(forms))
    assert rows(
        settings, "select count(*) from messages where provider_message_id = any(%s)", sids
    ) == [(0,)]

    duplicates_before = _duplicates()
    assert _retried_twice(settings, tenant, forms) == [200] * 2 * len(forms)
    assert _duplicates() - duplicates_before == len(forms)
    _stored_once(settings, sids)
    assert rows(settings, "select body from messages where provider_message_id = %s", sids[2]) == [
        (FAIL_AT_COMMIT,)
    ]


def test_a_row_failing_at_commit_fails_only_its_own_request(
    settings: Settings, tenant: Tenant
) -> None:
    users = [f"whatsapp:+55119400000{n:02d}" for n in range(6)]
    forms = [inbound_form(tenant, f"mensagem {n}", user=user) for n, user in enumerate(users)]
    forms[2] = inbound_form(tenant, FAIL_AT_COMMIT, user=users[2])
    sids = [form["MessageSid"] for form in forms]
    split_before = _batches("split")
    _injected(settings, _ROW_FAILS_AT_COMMIT)
    try:
        responses = _one_batch(settings, tenant, forms)
    finally:
        _injected(settings, _REMOVE_AT_COMMIT)

    # The shared commit failed; each row was then committed on its own before its 200.
    assert [r.status_code for r in responses] == [200, 200, 503, 200, 200, 200]
    assert responses[2].json()["error"]["code"] == "not_stored"
    assert responses[2].headers["Retry-After"]
    split = _batches("split")
    assert (split[0] - split_before[0], split[1] - split_before[1]) == (1, len(forms))
    good = sids[:2] + sids[3:]
    _stored_once(settings, good)
    assert rows(
        settings, "select count(*) from messages where provider_message_id = %s", sids[2]
    ) == [(0,)]

    duplicates_before = _duplicates()
    assert _retried_twice(settings, tenant, forms) == [200] * 2 * len(forms)
    assert _duplicates() - duplicates_before == 2 * len(forms) - 1  # all but the first retry
    _stored_once(settings, sids)


def test_one_poisoned_request_fails_alone_when_its_row_raises_an_operational_error(
    settings: Settings, tenant: Tenant
) -> None:
    users = [f"whatsapp:+55119500000{n:02d}" for n in range(6)]
    forms = [inbound_form(tenant, f"mensagem {n}", user=user) for n, user in enumerate(users)]
    forms[3] = inbound_form(tenant, POISON, user=users[3])
    sids = [form["MessageSid"] for form in forms]
    split_before = _batches("split")
    _injected(settings, _POISON)
    try:
        responses = _one_batch(settings, tenant, forms)
    finally:
        _injected(settings, _REMOVE_POISON)

    assert [r.status_code for r in responses] == [200, 200, 200, 503, 200, 200]
    assert responses[3].headers["Retry-After"]
    split = _batches("split")
    assert (split[0] - split_before[0], split[1] - split_before[1]) == (1, len(forms))
    _stored_once(settings, sids[:3] + sids[4:])
    assert rows(
        settings, "select count(*) from messages where provider_message_id = %s", sids[3]
    ) == [(0,)]


def test_concurrent_posts_are_each_stored_once_and_replays_reported_as_duplicates(
    settings: Settings, tenant: Tenant
) -> None:
    users = [f"whatsapp:+55119200000{n:02d}" for n in range(8)]
    forms = [inbound_form(tenant, f"oi {n}", user=users[n % len(users)]) for n in range(40)]
    posts = forms + forms[::4]  # 10 of them posted twice, at the same time as the first
    committed_before, duplicates_before = _batches("committed"), _duplicates()

    async def burst(app: FastAPI, client: httpx.AsyncClient) -> list[int]:
        answers = await asyncio.gather(*(_post(client, settings, tenant, f) for f in posts))
        return [r.status_code for r in answers]

    assert _run(settings, burst) == [200] * len(posts)

    assert _duplicates() - duplicates_before == len(posts) - len(forms)
    committed = _batches("committed")
    assert committed[1] - committed_before[1] == len(posts)  # every post went through a batch
    assert rows(
        settings, "select provider_message_id, count(*) from messages group by 1 order by 1"
    ) == sorted((form["MessageSid"], 1) for form in forms)
    # One user, one open conversation, however many of its messages shared a batch.
    assert rows(settings, "select count(*), count(distinct user_id) from conversations") == [
        (len(users), len(users))
    ]


def test_a_bad_row_fails_only_its_own_request(
    settings: Settings, tenant: Tenant, sandbox: TwilioSandbox
) -> None:
    assert settings.database_url
    account_sid, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
    sandbox.add_account(account_sid, token)
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        gone = tenants.upsert_tenant(
            conn, slug="gone", name="Gone", whatsapp_sender="whatsapp:+14155550111",
            twilio_account_sid=account_sid, twilio_auth_token=token,
        )  # fmt: skip
    ours = [inbound_form(tenant, f"oi {n}", user=f"whatsapp:+551193000000{n}") for n in range(4)]
    split_before = _batches("split")

    async def mixed(app: FastAPI, client: httpx.AsyncClient) -> list[int]:
        # The deleted tenant is still in this process's cache, as after another process
        # deleted it: its row's insert fails on the foreign key, inside the shared batch.
        warm = await _post(client, settings, gone, inbound_form(gone, "oi"))
        assert warm.status_code == 200, warm.text
        async with await psycopg.AsyncConnection.connect(settings.database_url or "") as conn:
            await conn.execute("delete from tenants where id = %s", (gone.id,))
            await conn.commit()
        async with _committer_held(app, client, settings, tenant):
            posts = [
                asyncio.create_task(_post(client, settings, *sent))
                for sent in [(tenant, ours[0]), (tenant, ours[1]), (gone, inbound_form(gone, "?")),
                             (tenant, ours[2]), (tenant, ours[3])]
            ]  # fmt: skip

            async def all_wait() -> bool:
                return _waiting(app) == len(posts)

            await _until(all_wait, "every post to wait for the next batch")
        return [r.status_code for r in await asyncio.gather(*posts)]

    assert _run(settings, mixed) == [200, 200, 404, 200, 200]
    split = _batches("split")
    assert (split[0] - split_before[0], split[1] - split_before[1]) == (1, 5)
    stored = rows(settings, "select body from messages where tenant_id = %s order by id", tenant.id)
    assert stored == [("primeira",), ("segunda",), ("oi 0",), ("oi 1",), ("oi 2",), ("oi 3",)]
