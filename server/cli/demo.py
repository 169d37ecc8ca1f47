"""`conversa demo`: the whole service on embedded components, with a terminal chat.

It starts (or reuses) embedded PostgreSQL and Redis, applies migrations, creates a demo tenant
and user, starts the local Twilio sandbox (or, with `--channel cloud`, the local Cloud API
sandbox, switching the demo tenant to Meta's WhatsApp Cloud API), the offline model when no
OPENAI_API_KEY is set, the API and a worker as separate processes, then chats as a WhatsApp user
through signed webhooks.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from uuid import UUID

import httpx

from graphs.features import FEATURES
from server.cli.chat import (
    DEMO_ACCOUNT_SID,
    DEMO_AUTH_TOKEN,
    DEMO_CLOUD_ACCESS_TOKEN,
    DEMO_CLOUD_APP_SECRET,
    DEMO_CLOUD_PHONE_NUMBER_ID,
    DEMO_SENDER,
    DEMO_USER,
    Chat,
    ChatClient,
    CloudChatClient,
    converse,
)
from server.settings import Settings, get_settings
from store.embedded import free_port

if TYPE_CHECKING:
    from channels.sandbox.cloud import CloudSandbox

T = TypeVar("T")

CHANNELS = ("twilio", "cloud")
"""The providers the demo can chat through: Twilio (the default) or Meta's Cloud API."""


def _step(title: str, action: Callable[[], T]) -> T:
    print(f"• {title}...", end="", flush=True)
    started = time.monotonic()
    try:
        result = action()
    except Exception:
        print(" failed")
        raise
    print(f" done ({time.monotonic() - started:.1f} s)", flush=True)
    return result


@contextlib.contextmanager
def _process(
    name: str, args: list[str], env: dict[str, str], log_dir: Path
) -> Iterator[subprocess.Popen[bytes]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.cli.main", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Ask a child process to stop (SIGTERM), and kill it if it has not within `timeout` s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_healthy(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited with code {process.returncode}; see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the API did not become healthy in {timeout:.0f} s; see {log}")


def _wait_worker(
    redis_url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60
) -> None:
    from rq import Worker

    from server.services import redis_client

    redis = redis_client(redis_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited with code {process.returncode}; see {log}")
        if any(w.pid == process.pid for w in Worker.all(connection=redis)):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the worker did not register in {timeout:.0f} s; see {log}")


def _hand_back_left_over(settings: Settings, tenant_id: UUID) -> None:
    """An earlier run may have left the demo conversation with a person: give it back.

    Otherwise the assistant would stay quiet (as it must while a person has a conversation)
    and a newcomer's second `make demo` would wait for replies that never come.
    """
    import psycopg

    from server.jobs.queue import enqueue_support_job
    from server.services import redis_client
    from store.support import with_staff

    assert settings.database_url and settings.redis_url
    with psycopg.connect(settings.database_url) as conn:
        waiting = with_staff(conn, tenant_id)
    if not waiting:
        return
    print("An earlier run left the conversation with a person; handing it back to the assistant.")
    redis = redis_client(settings.redis_url)
    for conversation_id in waiting:
        enqueue_support_job(
            redis, settings, "hand_back", str(tenant_id), str(conversation_id), "demo",
            "The demo restarted.", "demo-restart", cid="demo-restart",
            description=f"hand back {conversation_id}",
        )  # fmt: skip


def run_demo(
    says: list[str], timeout: float = 90.0, listen: float = 0.0, channel: str = "twilio"
) -> int:
    """Start everything, chat (interactively, or once per `says` line), stop everything.

    `channel` is the demo tenant's provider for this run: "twilio" or "cloud".
    """
    from server.logs import configure_logging

    if channel not in CHANNELS:
        print(f"demo failed: unknown channel {channel!r} (one of {', '.join(CHANNELS)})",
              file=sys.stderr)  # fmt: skip
        return 2
    settings = get_settings()
    configure_logging(settings.app_env, "WARNING")
    try:
        with _demo_stack(settings, channel) as client:
            through = "Meta's WhatsApp Cloud API" if channel == "cloud" else "Twilio"
            print(f"Chatting as {DEMO_USER} with the demo tenant on {DEMO_SENDER}, "
                  f"through {through}.")  # fmt: skip
            return converse(client, says, timeout=timeout, listen=listen)
    except Exception as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _demo_stack(settings: Settings, channel: str = "twilio") -> Iterator[Chat]:
    from channels.sandbox.twilio import TwilioSandbox
    from store.embedded import start_postgres, start_redis

    data_dir = settings.data_dir
    log_dir = data_dir / "logs"
    with contextlib.ExitStack() as stack:
        if not settings.database_url:
            url = _step(
                "Starting PostgreSQL (embedded, pgvector)", lambda: start_postgres(data_dir)
            )
            settings = settings.model_copy(update={"database_url": url})
        if not settings.redis_url:
            redis_server = _step(
                "Starting Redis (embedded)", lambda: start_redis(data_dir / "redis")
            )
            stack.callback(redis_server.stop)
            settings = settings.model_copy(update={"redis_url": redis_server.url})
        assert settings.database_url and settings.redis_url
        _step("Applying migrations", lambda: _migrate(settings.database_url or ""))
        tenant_id = _step(
            "Creating the demo tenant and user",
            lambda: seed_demo(settings.database_url or "", channel=channel),
        )
        port = free_port()
        api_url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "PUBLIC_BASE_URL": api_url,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(port),
        }
        twilio: TwilioSandbox | None = None
        cloud: CloudSandbox | None = None
        if channel == "cloud":
            cloud = _step("Starting the local Cloud API sandbox", _start_cloud_sandbox)
            stack.callback(cloud.stop)
            cloud.webhook_url = f"{api_url}/webhooks/cloud"  # delivery statuses come back
            env["CLOUD_API_BASE_URL"] = cloud.url
        else:
            twilio = _step(
                "Starting the local Twilio API sandbox",
                lambda: TwilioSandbox(accounts={DEMO_ACCOUNT_SID: DEMO_AUTH_TOKEN}).start(),
            )
            stack.callback(twilio.stop)
            env["TWILIO_API_BASE_URL"] = twilio.url
        from graphs.settings import LLMSettings

        if not LLMSettings().configured:
            from graphs.offline.model import serve

            offline = _step("Starting the offline model (no OPENAI_API_KEY set)", serve)
            stack.callback(offline.stop)
            env |= {"OPENAI_BASE_URL": offline.base_url, "OPENAI_API_KEY": "offline",
                    "LLM_MODEL": "offline"}  # fmt: skip

        api = stack.enter_context(_process("api", ["serve"], env, log_dir))
        _step(
            "Starting the API",
            lambda: _wait_healthy(f"{api_url}/readyz", api, log_dir / "api.log"),
        )
        worker = stack.enter_context(_process("worker", ["worker"], env, log_dir))
        _step(
            "Starting the worker",
            lambda: _wait_worker(settings.redis_url or "", worker, log_dir / "worker.log"),
        )
        print(f"Logs: {log_dir}/api.log, {log_dir}/worker.log")
        print(f"Management API: {api_url}/docs  (a token: .venv/bin/conversa token --role "
              "tenant_admin --tenant demo)")  # fmt: skip
        print(f"Support console: {_console_link(settings, api_url, tenant_id)}")
        client: Chat
        if cloud is not None:
            print(f"Cloud API sandbox: {cloud.url}  (phone number id {DEMO_CLOUD_PHONE_NUMBER_ID}, "
                  f"display number {DEMO_SENDER.removeprefix('whatsapp:')}, access token "
                  f"{DEMO_CLOUD_ACCESS_TOKEN}, app secret {DEMO_CLOUD_APP_SECRET}; "
                  f"webhook {cloud.webhook_url})")  # fmt: skip
            client = CloudChatClient(
                api_url=api_url,
                sandbox=cloud,
                phone_number_id=DEMO_CLOUD_PHONE_NUMBER_ID,
                user=DEMO_USER,
            )
        else:
            assert twilio is not None
            print(f"Twilio API sandbox: {twilio.url}  (account {DEMO_ACCOUNT_SID}, "
                  f"auth token {DEMO_AUTH_TOKEN})")  # fmt: skip
            client = ChatClient(
                api_url=api_url,
                public_base_url=api_url,
                account_sid=DEMO_ACCOUNT_SID,
                auth_token=DEMO_AUTH_TOKEN,
                sender=DEMO_SENDER,
                user=DEMO_USER,
                twilio_api_base_url=twilio.url,
            )
        _hand_back_left_over(settings, tenant_id)
        stack.callback(client.close)
        yield client


def _start_cloud_sandbox() -> CloudSandbox:
    """The local Cloud API sandbox, serving the demo tenant's number (its sender's digits)."""
    from channels.sandbox.cloud import CloudSandbox

    sandbox = CloudSandbox().start()
    sandbox.add_number(
        DEMO_CLOUD_PHONE_NUMBER_ID,
        DEMO_SENDER.removeprefix("whatsapp:+"),
        DEMO_CLOUD_ACCESS_TOKEN,
        DEMO_CLOUD_APP_SECRET,
    )
    return sandbox


def _console_link(settings: Settings, api_url: str, tenant_id: UUID) -> str:
    """The support console's URL, signed in as a support agent of the demo tenant."""
    from server.api.auth import Role, mint_token
    from server.api.auth_keys import AuthConfigError

    try:
        token = mint_token(
            settings, subject="support@demo", role=Role.support_agent, tenant_id=tenant_id,
            ttl=max(settings.jwt_ttl_seconds, 12 * 3600),  # a demo session can last a while
        )  # fmt: skip
    except AuthConfigError as exc:
        return f"{api_url}/support  (no token minted here: {exc})"
    return f"{api_url}/support#token={token}"


def _migrate(database_url: str) -> None:
    from store.migrate import migrate

    migrate(database_url)


def seed_demo(database_url: str, channel: str = "twilio") -> UUID:
    """Create (or refresh) the demo tenant and its demo user; return the tenant's id.

    `channel` is the tenant's provider: "twilio", or "cloud" with the local Cloud API
    sandbox's demo number and credentials (what a PATCH of the tenant would set).
    """
    import psycopg

    from store import identity, tenants

    with psycopg.connect(database_url) as conn, conn.transaction():
        tenant = tenants.upsert_tenant(
            conn,
            slug="demo",
            name="Conversa Demo",
            whatsapp_sender=DEMO_SENDER,
            twilio_account_sid=DEMO_ACCOUNT_SID,
            twilio_auth_token=DEMO_AUTH_TOKEN,
        )
        tenants.upsert_user(
            conn,
            tenant.id,
            wa_id=DEMO_USER.removeprefix("whatsapp:+"),
            address=DEMO_USER,
            profile_name="Demo User",
        )
        plan_id = identity.upsert_plan(
            conn, tenant.id, slug="demo", name="Demo", features=list(FEATURES)
        )
        identity.default_plan_if_unset(conn, tenant.id, plan_id)
        if channel == "cloud":
            cloud = (DEMO_CLOUD_PHONE_NUMBER_ID, DEMO_CLOUD_ACCESS_TOKEN, DEMO_CLOUD_APP_SECRET)
        elif channel == "twilio":
            cloud = (None, None, None)
        else:
            raise ValueError(f"unknown channel {channel!r} (one of {', '.join(CHANNELS)})")
        tenants.set_channel(conn, tenant.id, channel, *cloud)
    return tenant.id
