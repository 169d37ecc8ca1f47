"""The channel under real traffic, with real processes: the API (`conversa serve`), several RQ
workers (`conversa worker`), Twilio's status callbacks from the sandbox, kills and restarts."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from channels.sandbox.twilio import TwilioSandbox
from channels.twilio.inbound import sign
from graphs.offline.llm_server import ChatCompletionsServer
from server.settings import Settings
from store.embedded import EmbeddedRedis, free_port, start_redis
from store.records import Tenant
from tests.conftest import inbound_form, rows, wait_until
from tests.fakes import EchoModel

BIN = Path(sys.executable).parent


class Stack:
    """The API and workers as real processes, against the test database, Redis and fakes."""

    def __init__(self, settings: Settings, sandbox: TwilioSandbox, tmp: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.env = {
            **os.environ,
            "APP_ENV": "production",
            "JWT_SECRET": secrets.token_urlsafe(48),
            "LOG_LEVEL": "INFO",
            "PUBLIC_BASE_URL": self.url,
            "API_PORT": str(self.port),
            "TWILIO_API_BASE_URL": sandbox.url,
            "TWILIO_STATUS_CALLBACKS": "true",
            "RELAY_INTERVAL_SECONDS": "0.5",
            "OUTBOX_MIN_AGE_SECONDS": "1",
            **env,
        }
        self.settings = settings
        self.processes: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [str(BIN / "conversa"), *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def start_api(self) -> None:
        api = self._start("api", "serve", "--port", str(self.port))
        wait_until(lambda: self._healthy(api), what="the API to answer /healthz")

    def _healthy(self, api: subprocess.Popen[bytes]) -> bool:
        assert api.poll() is None, self.logs()
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start_worker(self) -> subprocess.Popen[bytes]:
        worker = self._start("worker", "worker")
        self.workers.append(worker)
        return worker

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the process and its children (an RQ worker's work horse), no clean-up."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def post(self, tenant: Tenant, form: dict[str, str]) -> int:
        url = f"{self.url}/webhooks/inbound"
        signature = sign(tenant.twilio_auth_token, url, form)
        response = httpx.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=10)
        return response.status_code

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.tmp.glob("*.log")))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def echo(llm_server: ChatCompletionsServer) -> EchoModel:
    model = EchoModel()
    llm_server.responder = model
    return model


@pytest.fixture
def live_sandbox(tenant: Tenant) -> Iterator[TwilioSandbox]:
    """A sandbox that posts status callbacks, as Twilio does."""
    with TwilioSandbox(accounts={tenant.twilio_account_sid: tenant.twilio_auth_token}) as sandbox:
        yield sandbox


@pytest.fixture
def stack(
    settings: Settings, live_sandbox: TwilioSandbox, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    marker = request.node.get_closest_marker("stack_env")
    the_stack = Stack(settings, live_sandbox, tmp_path, **(marker.kwargs if marker else {}))
    try:
        yield the_stack
    finally:
        the_stack.stop()


def _answered(settings: Settings, count: int) -> Callable[[], bool]:
    def check() -> bool:
        done = (
            "select count(*) from messages where direction = 'inbound' and processed_at is not null"
        )
        return rows(settings, done) == [(count,)]

    return check


def _replies(sandbox: TwilioSandbox, user: str | None = None) -> list[str]:
    return [m["body"] for m in sandbox.messages if user is None or m["to"] == user]


@pytest.mark.stack_env(INBOUND_DEBOUNCE_SECONDS="0")
def test_ten_messages_are_answered_in_order_one_run_at_a_time_across_workers(
    stack: Stack, settings: Settings, tenant: Tenant, live_sandbox: TwilioSandbox, echo: EchoModel
) -> None:
    stack.start_api()
    stack.start_worker()
    stack.start_worker()
    texts = [f"m{i} sleep={(10 - i) * 0.05:.2f}" for i in range(10)]
    for text in texts:
        assert stack.post(tenant, inbound_form(tenant, text)) == 200
    wait_until(_answered(settings, 10), what="ten answered messages")
    wait_until(lambda: len(rows(settings, "select 1 from messages where direction = 'outbound' "
                                          "and status = 'delivered'")) == len(echo.turns),
               what="every reply delivered")  # fmt: skip

    assert max(echo.max_concurrent.values()) == 1, "never two runs of one conversation at once"
    assert [text for turn in echo.turns for text in turn] == texts, "each message once, in order"
    assert _replies(live_sandbox) == ["re: " + " | ".join(turn) for turn in echo.turns]
    statuses = rows(settings, "select distinct status from messages where direction = 'outbound'")
    assert statuses == [("delivered",)], "status callbacks came back through the API"


@pytest.mark.stack_env(INBOUND_DEBOUNCE_SECONDS="1.0", INBOUND_DEBOUNCE_MAX_SECONDS="5")
def test_a_burst_of_five_gets_one_considered_answer(
    stack: Stack, settings: Settings, tenant: Tenant, live_sandbox: TwilioSandbox, echo: EchoModel
) -> None:
    stack.start_api()
    stack.start_worker()
    stack.start_worker()
    burst = ["Oi", "gastei 30 no mercado", "e 12 na padaria", "ontem", "quanto deu?"]
    for text in burst:
        assert stack.post(tenant, inbound_form(tenant, text)) == 200
    wait_until(_answered(settings, 5), what="the burst to be answered")
    wait_until(lambda: len(live_sandbox.messages) >= 1, what="the reply")

    assert echo.turns == [burst]
    assert _replies(live_sandbox) == ["re: " + " | ".join(burst)]
    thread = rows(
        settings, "select count(distinct correlation_id) from messages where direction = 'inbound'"
    )
    assert thread == [(5,)], "each message keeps its own correlation id"


@pytest.mark.stack_env(INBOUND_DEBOUNCE_SECONDS="0")
def test_concurrent_redeliveries_give_one_message_one_run_one_reply(
    stack: Stack, settings: Settings, tenant: Tenant, live_sandbox: TwilioSandbox, echo: EchoModel
) -> None:
    stack.start_api()
    stack.start_worker()
    stack.start_worker()
    forms = [
        inbound_form(tenant, f"pergunta {n}", user=f"whatsapp:+55119000000{n:02d}")
        for n in range(5)
    ]
    posts = [form for n, form in enumerate(forms) for _ in range(n + 1)]  # 1 to 5 copies each
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda f=f: results.append(stack.post(tenant, f))) for f in posts
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == [200] * len(posts)
    wait_until(_answered(settings, 5), what="five answered messages")
    wait_until(lambda: len(live_sandbox.messages) >= 5, what="five replies")
    time.sleep(1)  # time for any duplicate to show up
    assert rows(settings, "select count(*) from messages where direction = 'inbound'") == [(5,)]
    assert sorted(_replies(live_sandbox)) == sorted(f"re: pergunta {n}" for n in range(5))
    assert sorted(t for turn in echo.turns for t in turn) == [f"pergunta {n}" for n in range(5)]


@pytest.mark.stack_env(INBOUND_DEBOUNCE_SECONDS="0", STALE_JOB_SECONDS="2", JOB_RETRIES="0")
def test_a_worker_killed_mid_run_still_gives_exactly_one_reply(
    stack: Stack, settings: Settings, tenant: Tenant, live_sandbox: TwilioSandbox, echo: EchoModel
) -> None:
    stack.start_api()
    doomed = stack.start_worker()
    assert stack.post(tenant, inbound_form(tenant, "conta devagar sleep=2")) == 200
    wait_until(echo.started.is_set, what="the run to reach the model")
    stack.kill(doomed)
    assert rows(settings, "select status from messages") == [("received",)]

    stack.start_worker()
    wait_until(_answered(settings, 1), timeout=60, what="the message answered by another worker")
    wait_until(lambda: len(live_sandbox.messages) >= 1, what="the reply")
    time.sleep(1.5)

    assert _replies(live_sandbox) == ["re: conta devagar sleep=2"]
    assert rows(settings, "select count(*) from messages where direction = 'outbound'") == [(1,)]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = start_redis(tmp_path / "redis", persist=False)
    yield server
    server.stop()


def test_redis_restarted_between_webhook_and_worker_loses_nothing(
    settings: Settings,
    tenant: Tenant,
    live_sandbox: TwilioSandbox,
    echo: EchoModel,
    own_redis: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    stack = Stack(settings, live_sandbox, tmp_path, REDIS_URL=own_redis.url,
                  INBOUND_DEBOUNCE_SECONDS="0", STALE_JOB_SECONDS="2")  # fmt: skip
    try:
        stack.start_api()
        assert stack.post(tenant, inbound_form(tenant, "Oi, alguém aí?")) == 200
        # Redis goes away with the queued job (it keeps nothing on disk) and comes back empty.
        own_redis.stop()
        restarted = start_redis(own_redis.directory, persist=False, port=own_redis.port)
        try:
            stack.start_worker()
            wait_until(_answered(settings, 1), what="the message answered after Redis returned")
            wait_until(lambda: len(live_sandbox.messages) >= 1, what="the reply")
            assert _replies(live_sandbox) == ["re: Oi, alguém aí?"]
        finally:
            restarted.stop()
    finally:
        stack.stop()
