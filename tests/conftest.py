"""Fixtures: real embedded PostgreSQL (pgvector) and Redis, the Twilio sandbox, a scripted model.

Set TEST_DATABASE_URL / TEST_REDIS_URL to run against servers of your own instead; the suite
creates and drops its own database `conversa_test_<pid>` there.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue, SimpleWorker, Worker

from channels.sandbox.twilio import TwilioSandbox
from channels.twilio.inbound import sign
from graphs.offline.llm_server import ChatCompletionsServer
from server.app import create_app
from server.cli.chat import whatsapp_form
from server.relay import relay_once
from server.services import Services
from server.settings import QUEUES, Settings, get_settings
from store import tenants
from store.embedded import EmbeddedRedis, start_postgres, start_redis
from store.migrate import migrate
from store.records import Tenant
from tests.fakes import FakeLangSmith, ScriptedModel
from tests.langsmith_api import forget_langsmith_settings
from tests.speech import clips, speak, whisper_dir  # noqa: F401 (the voice-note fixtures)

BIN = Path(sys.executable).parent
"""Where the project's console scripts are installed."""

ROOT = Path(__file__).resolve().parent.parent
TEST_DB = f"conversa_test_{os.getpid()}"  # concurrent sessions do not share a database
USER = "whatsapp:+5511988887777"


def _with_database(url: str, database: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = database
    return psycopg.conninfo.make_conninfo(**info)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated database on the embedded PostgreSQL (or TEST_DATABASE_URL's server)."""
    admin = os.environ.get("TEST_DATABASE_URL") or start_postgres(ROOT / ".data" / "test")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"drop database if exists {TEST_DB} with (force)")
        conn.execute(f"create database {TEST_DB}")
    url = _with_database(admin, TEST_DB)
    migrate(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"drop database if exists {TEST_DB} with (force)")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server of the suite's own (or TEST_REDIS_URL)."""
    if url := os.environ.get("TEST_REDIS_URL"):
        yield url
        return
    server: EmbeddedRedis = start_redis(tmp_path_factory.mktemp("redis"), persist=False)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[TwilioSandbox]:
    """The local Twilio REST API."""
    with TwilioSandbox(auto_status=()) as server:
        yield server


@pytest.fixture(scope="session")
def llm_server() -> Iterator[ChatCompletionsServer]:
    """An OpenAI-compatible server; each test scripts it through the `llm` fixture."""
    with ChatCompletionsServer(ScriptedModel()) as server:
        yield server


@pytest.fixture
def llm(llm_server: ChatCompletionsServer) -> Iterator[ScriptedModel]:
    """A fresh scripted model for this test."""
    model = ScriptedModel()
    llm_server.responder = model
    yield model


@pytest.fixture
def scripted(
    llm: ScriptedModel, llm_server: ChatCompletionsServer, monkeypatch: pytest.MonkeyPatch
) -> ScriptedModel:
    """The scripted model as the graph's model, for tests that run the graph without `settings`."""
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.setenv("LLM_MAX_RETRIES", "0")
    return llm


@pytest.fixture
def langsmith(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLangSmith]:
    """A local LangSmith endpoint that every trace of the test goes to."""
    server = FakeLangSmith()
    monkeypatch.setenv("LANGSMITH_TRACING", "true")
    monkeypatch.setenv("LANGSMITH_ENDPOINT", server.url)
    monkeypatch.setenv("LANGSMITH_API_KEY", "lsv2-test")
    forget_langsmith_settings()
    yield server
    monkeypatch.undo()
    forget_langsmith_settings()
    server.close()


@pytest.fixture
def redis(redis_server: str) -> Iterator[Redis]:
    """An empty Redis database."""
    client = Redis.from_url(redis_server)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def db(pg_url: str) -> Iterator[str]:
    """The test database, emptied of every row before the test."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "select tablename from pg_tables where schemaname = 'public' "
                "and tablename not in ('schema_migrations', 'checkpoint_migrations', "
                "'store_migrations', 'vector_migrations')"
            )
        ]
        conn.execute("truncate " + ", ".join(tables) + " restart identity cascade")
    yield pg_url


@pytest.fixture
def settings(
    monkeypatch: pytest.MonkeyPatch,
    db: str,
    redis: Redis,
    redis_server: str,
    sandbox: TwilioSandbox,
    llm_server: ChatCompletionsServer,
    tmp_path: Path,
) -> Iterator[Settings]:
    """Settings pointing at the test servers, exported so jobs read the same."""
    sandbox.reset()
    sandbox.auto_status = ()  # a test that serves the API over HTTP turns status callbacks on
    env = {
        "APP_ENV": "test",
        "DATABASE_URL": db,
        "REDIS_URL": redis_server,
        "DATA_DIR": str(tmp_path),
        "PUBLIC_BASE_URL": "https://bot.example.com",
        "TWILIO_API_BASE_URL": sandbox.url,
        "OPENAI_BASE_URL": llm_server.base_url,
        "OPENAI_API_KEY": "test-key",
        "LLM_MODEL": "scripted",
        "LLM_MAX_RETRIES": "0",
        "LLM_CHECK_AT_START": "false",  # the scripted model answers only what a test scripts
        "JOB_RETRIES": "0",
        "OUTBOX_MIN_AGE_SECONDS": "0",
        "DB_POOL_TIMEOUT": "2",
        "INBOUND_DEBOUNCE_SECONDS": "0",
        "TYPING_AFTER_SECONDS": "0",
        "TWILIO_STATUS_CALLBACKS": "false",
        "SEND_BACKOFF_SECONDS": "0",
        "RETENTION_INTERVAL_SECONDS": "0",
        "DATE_NOTICE_INTERVAL_SECONDS": "0",  # tests run the date-notice sweep themselves
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def tenant(settings: Settings, sandbox: TwilioSandbox) -> Tenant:
    """A tenant whose Twilio account the sandbox knows."""
    account_sid, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
    sandbox.add_account(account_sid, token)
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        return tenants.upsert_tenant(
            conn,
            slug="acme",
            name="Acme",
            whatsapp_sender="whatsapp:+14155550100",
            twilio_account_sid=account_sid,
            twilio_auth_token=token,
        )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The API, with its lifespan run (the background relay off: `run_jobs` relays by hand)."""
    with TestClient(create_app(settings, relay=False)) as test_client:
        yield test_client


def inbound_form(tenant: Tenant, body: str, *, user: str = USER, **extra: str) -> dict[str, str]:
    """Return a WhatsApp webhook form for `tenant` from `user`."""
    form = whatsapp_form(
        account_sid=tenant.twilio_account_sid, sender=tenant.whatsapp_sender, user=user, body=body
    )
    form.update(extra)
    return form


def say(client: TestClient, settings: Settings, tenant: Tenant, text: str, **extra: str) -> None:
    """Post `text` as the user (form fields `extra` added), check the ack, and run the jobs."""
    response = post_inbound(client, settings, tenant, inbound_form(tenant, text, **extra))
    assert response.status_code == 200, response.text
    run_jobs(settings)


def wait_until(check: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    """Poll `check` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def post_inbound(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    form: dict[str, str],
    *,
    signature: str | None = None,
) -> Any:
    """POST `form` to the webhook, signed with the tenant's token unless `signature` is given."""
    url = settings.public_url("/webhooks/inbound")
    headers = {"X-Twilio-Signature": signature or sign(tenant.twilio_auth_token, url, form)}
    return client.post("/webhooks/inbound", data=form, headers=headers)


def relay(settings: Settings) -> int:
    """Move stored messages onto the queues, as the API's relay thread does."""
    services = Services.build(settings)
    try:
        return relay_once(services.pool, services.redis, settings)
    finally:
        services.close()


def run_jobs(settings: Settings) -> None:
    """Relay, then run every queued job (and the jobs they queue) with a real RQ worker."""
    assert settings.redis_url
    relay(settings)
    connection = Redis.from_url(settings.redis_url)
    queues = [Queue(name, connection=connection) for name in QUEUES]
    SimpleWorker(queues, connection=connection).work(burst=True)


def queued_jobs(settings: Settings, queue: str) -> int:
    """Return how many jobs wait in `queue`."""
    assert settings.redis_url
    return Queue(queue, connection=Redis.from_url(settings.redis_url)).count


def rows(settings: Settings, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Run a query against the test database."""
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


@pytest.fixture
def worker_process(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`conversa worker` (scheduler enabled) as its own process, on the test servers; ready
    (registered with RQ) when the test starts."""
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "conversa"), "worker"],
        env={**os.environ, "LOG_LEVEL": "INFO"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert settings.redis_url
    connection = Redis.from_url(settings.redis_url)
    deadline = time.monotonic() + 120
    while not any(w.pid == process.pid for w in Worker.all(connection=connection)):
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                "the worker did not start: " + (tmp_path / "worker.log").read_text()
            )
        time.sleep(0.1)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
