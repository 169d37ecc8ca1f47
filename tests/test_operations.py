"""Operating it with real processes: graceful stops of the API and the workers, several workers
sharing the queues, and the metrics each process serves."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq import Worker

from channels.sandbox.twilio import TwilioSandbox
from channels.twilio.inbound import sign
from server.jobs.liveness import process_of
from server.settings import Settings
from store.embedded import free_port
from store.records import Tenant
from tests.conftest import inbound_form, rows, wait_until
from tests.fakes import EchoModel
from tests.test_traffic import Stack, _answered, echo, live_sandbox, stack

__all__ = ["echo", "live_sandbox", "stack"]  # fixtures shared with tests/test_traffic.py


def _samples(url: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Scrape `url` and return the samples called `name`, with their labels."""
    text = httpx.get(url, timeout=5).text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


class _Traffic(threading.Thread):
    """Post webhooks (each a new message) until stopped; remember which got a 200."""

    def __init__(self, stack: Stack, tenant: Tenant) -> None:
        super().__init__(daemon=True)
        self.stack, self.tenant = stack, tenant
        self.stopping = threading.Event()
        self.accepted: list[str] = []
        self.refused = 0

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            form = inbound_form(self.tenant, f"tráfego {n}")
            n += 1
            try:
                status = self.stack.post(self.tenant, form)
            except httpx.TransportError:
                self.refused += 1
                time.sleep(0.02)
                continue
            if status == 200:
                self.accepted.append(form["MessageSid"])


def test_sigterm_on_the_api_finishes_requests_in_flight_refuses_new_ones_and_loses_nothing(
    stack: Stack, settings: Settings, tenant: Tenant
) -> None:
    stack.start_api()
    (api,) = stack.processes
    form = inbound_form(tenant, "chegou enquanto o servidor parava")
    body = urlencode(form).encode()
    signature = sign(tenant.twilio_auth_token, f"{stack.url}/webhooks/inbound", form)
    head = (
        f"POST /webhooks/inbound HTTP/1.1\r\nHost: 127.0.0.1:{stack.port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nX-Twilio-Signature: {signature}\r\n\r\n"
    )
    # A slow client: the request is in flight (headers read, body still arriving) at SIGTERM.
    in_flight = socket.create_connection(("127.0.0.1", stack.port), timeout=30)
    in_flight.sendall(head.encode() + body[:20])
    traffic = _Traffic(stack, tenant)
    traffic.start()
    try:
        wait_until(lambda: len(traffic.accepted) >= 3, what="webhooks answered before the stop")
        os.kill(api.pid, signal.SIGTERM)
        wait_until(lambda: _refused(stack.port), timeout=10, what="new connections refused")
        assert api.poll() is None, "still running: the request in flight holds the shutdown"

        in_flight.sendall(body[20:])
        response = in_flight.recv(65536).decode()
        api.wait(timeout=30)
    finally:
        traffic.stopping.set()
        traffic.join(timeout=10)
        in_flight.close()

    assert response.startswith("HTTP/1.1 200"), response
    assert api.returncode in (0, -signal.SIGTERM), stack.logs()
    assert traffic.refused > 0, "connections after the stop were refused"
    stored = {sid for (sid,) in rows(settings, "select provider_message_id from messages")}
    assert form["MessageSid"] in stored, "the request in flight was stored"
    assert set(traffic.accepted) <= stored, "every webhook that got a 200 is in the database"


@pytest.mark.stack_env(INBOUND_DEBOUNCE_SECONDS="0")
def test_sigterm_on_a_worker_finishes_the_current_job_then_exits(
    stack: Stack, settings: Settings, tenant: Tenant, live_sandbox: TwilioSandbox, echo: EchoModel
) -> None:
    stack.start_api()
    worker = stack.start_worker()
    assert stack.post(tenant, inbound_form(tenant, "pensa com calma sleep=3")) == 200
    wait_until(echo.started.is_set, what="the run to reach the model")

    os.kill(worker.pid, signal.SIGTERM)  # what `docker stop` or systemd sends to the worker
    assert worker.wait(timeout=60) == 0, stack.logs()

    assert rows(settings, "select status from messages where direction = 'inbound'") == [
        ("answered",)
    ], "the job in progress finished before the worker exited"
    assert rows(settings, "select count(*) from ai_results") == [(1,)]
    stack.start_worker()  # the reply's send job waits for the next worker
    wait_until(lambda: len(live_sandbox.messages) >= 1, what="the reply")
    time.sleep(1)  # time for any duplicate to show up
    assert [m["body"] for m in live_sandbox.messages] == ["re: pensa com calma sleep=3"]
    assert len(echo.turns) == 1, "answered once"


@pytest.mark.stack_env(INBOUND_DEBOUNCE_SECONDS="0", STALE_JOB_SECONDS="2", JOB_RETRIES="0")
def test_a_second_sigterm_leaves_the_job_to_be_retried_and_it_is_answered_once(
    stack: Stack, settings: Settings, tenant: Tenant, live_sandbox: TwilioSandbox, echo: EchoModel
) -> None:
    stack.start_api()
    worker = stack.start_worker()
    assert stack.post(tenant, inbound_form(tenant, "uma conta longa sleep=8")) == 200
    wait_until(echo.started.is_set, what="the run to reach the model")

    os.kill(worker.pid, signal.SIGTERM)
    time.sleep(1.5)  # a supervisor's grace period runs out: RQ ignores a repeat within 1 s
    os.kill(worker.pid, signal.SIGTERM)  # cold shutdown: the work horse is killed
    worker.wait(timeout=30)
    assert rows(settings, "select status from messages") == [("received",)]

    stack.start_worker()
    wait_until(_answered(settings, 1), what="the message answered by the next worker")
    wait_until(lambda: len(live_sandbox.messages) >= 1, what="the reply")
    time.sleep(1.5)

    assert [m["body"] for m in live_sandbox.messages] == ["re: uma conta longa sleep=8"]
    assert rows(settings, "select count(*) from messages where direction = 'outbound'") == [(1,)]


def _start_workers(stack: Stack, settings: Settings, count: int) -> list[int]:
    """Start `count` workers, each serving metrics on its own port; wait until RQ knows them."""
    ports = [free_port() for _ in range(count)]
    started = [stack._start("worker", "worker", "--metrics-port", str(port)) for port in ports]
    stack.workers.extend(started)
    assert settings.redis_url
    redis = Redis.from_url(settings.redis_url)
    pids = {p.pid for p in started}
    wait_until(
        lambda: pids <= {w.pid for w in Worker.all(connection=redis)},
        timeout=120,
        what="the workers to register",
    )
    return ports


def _worker_names(settings: Settings) -> Counter[str]:
    """Which worker (lane) ran each turn job, from RQ's job hashes."""
    assert settings.redis_url
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    names: Counter[str] = Counter()
    for key in redis.scan_iter("rq:job:*"):
        if redis.type(key) != "hash":
            continue
        job = redis.hmget(key, "description", "worker_name")
        if (job[0] or "").startswith("answer message") and job[1]:
            names[job[1]] += 1
    return names


@pytest.mark.stack_env(INBOUND_DEBOUNCE_SECONDS="0")
def test_three_workers_share_the_queues_and_every_conversation_keeps_its_order(
    stack: Stack, settings: Settings, tenant: Tenant, live_sandbox: TwilioSandbox, echo: EchoModel
) -> None:
    stack.start_api()
    ports = _start_workers(stack, settings, 3)
    users = {u: f"whatsapp:+55119100000{u:02d}" for u in range(8)}
    texts = {u: [f"u{u} m{i} sleep=0.2" for i in range(3)] for u in users}
    for i in range(3):
        for u, user in users.items():
            form = inbound_form(tenant, texts[u][i], user=user, ProfileName=f"Pessoa{u}")
            assert stack.post(tenant, form) == 200
    total = sum(len(t) for t in texts.values())
    wait_until(_answered(settings, total), timeout=120, what="every message answered")
    # One reply per turn that was not folded into the next (a message that arrived while its
    # turn ran makes the turn's reply moot: the next turn answers both).
    sent = "select count(*) from ai_results where not superseded"
    delivered = (
        "select count(*) from messages where direction = 'outbound' and status = 'delivered'"
    )
    wait_until(lambda: rows(settings, delivered) == rows(settings, sent), what="every reply")

    assert max(echo.max_concurrent.values()) == 1, "never two runs of one conversation at once"
    seen = {text for turn in echo.turns for text in turn}
    assert seen == {t for ts in texts.values() for t in ts}, "every message reached the model"
    for u, user in users.items():
        replies = [m["body"] for m in live_sandbox.messages if m["to"] == user]
        answered = [text for reply in replies for text in reply.removeprefix("re: ").split(" | ")]
        assert answered == texts[u], "each message answered once, in arrival order"

    names = _worker_names(settings)
    processes = {process_of(name) for name in names}
    assert len(processes) > 1, f"the turns were shared by the worker processes: {names}"

    # Each worker's own /metrics counts its graph runs; together they are every run.
    def runs() -> list[float]:
        name = "conversa_graph_run_duration_seconds_count"
        return [sum(v for _, v in _samples(f"http://127.0.0.1:{p}/metrics", name)) for p in ports]

    wait_until(lambda: sum(runs()) == len(echo.turns), what="the workers' metrics to add up")
    # ...and its turn jobs, one count per process, are the ones RQ says it ran (a process can
    # run turn jobs and no graph: a job that finds its conversation's run under way leaves).
    by_process: Counter[str] = Counter()
    for name, count in names.items():
        by_process[process_of(name)] += count
    expected = sorted([*by_process.values(), *[0] * (len(ports) - len(by_process))])

    def turn_jobs() -> list[float]:
        return sorted(
            sum(v for labels, v in _samples(f"http://127.0.0.1:{p}/metrics", "conversa_jobs_total")
                if labels["job"] == "process_ai_response")
            for p in ports
        )  # fmt: skip

    wait_until(lambda: turn_jobs() == expected, what="each worker's turn jobs to match RQ's")
    jobs = [
        labels
        for p in ports
        for labels, _ in _samples(f"http://127.0.0.1:{p}/metrics", "conversa_jobs_total")
    ]
    assert {"job": "process_ai_response", "outcome": "finished"} in jobs
    assert {"job": "send_whatsapp_message", "outcome": "finished"} in jobs


@pytest.mark.stack_env(INBOUND_DEBOUNCE_SECONDS="0")
def test_several_api_processes_add_up_their_metrics(
    stack: Stack, settings: Settings, tenant: Tenant
) -> None:
    api = stack._start("api", "serve", "--port", str(stack.port), "--workers", "2")

    def up() -> bool:
        assert api.poll() is None, stack.logs()
        try:
            return httpx.get(f"{stack.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=60, what="two API processes")
    for n in range(8):
        assert stack.post(tenant, inbound_form(tenant, f"mensagem {n}")) == 200

    accepted = {"webhook": "inbound", "outcome": "accepted"}
    for _ in range(4):  # whichever process answers the scrape adds up both
        samples = _samples(f"{stack.url}/metrics", "conversa_webhook_requests_total")
        assert [v for labels, v in samples if labels == accepted] == [8.0]


def test_a_worker_refuses_a_metrics_port_in_use(stack: Stack) -> None:
    """Two workers on one port: the second says so instead of running blind."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        worker = stack._start("worker", "worker", "--metrics-port", str(port))
        assert worker.wait(timeout=120) != 0
    finally:
        busy.close()
    assert f"Cannot serve worker metrics on 127.0.0.1:{port}" in stack.logs()
