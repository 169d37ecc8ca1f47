"""Many turns at once in one worker process, and a dead worker's turns finished elsewhere at once.

Real processes (`conversa serve`, `conversa worker`), the real queue and database; the model is
the echo model, slowed per message with `sleep=<seconds>`, as a hosted model is slow. The
guarantees a user sees (order, one reply each) are run through each WhatsApp provider.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError
from redis import Redis
from rq import Queue, Worker
from rq.executions import Execution

from channels.sandbox.twilio import TwilioSandbox
from server.jobs.liveness import alive_key, process_of, requeue_orphans
from server.settings import QUEUE_PROCESS, Settings
from store.records import Tenant
from tests.conftest import inbound_form, rows, wait_until
from tests.fakes import EchoModel
from tests.providers import Provider, provider
from tests.test_operations import _worker_names
from tests.test_traffic import Stack, _answered, echo, live_sandbox, stack

__all__ = ["echo", "live_sandbox", "provider", "stack"]  # fixtures shared with other tests

BIN = Path(sys.executable).parent


def _user(n: int) -> str:
    return f"whatsapp:+5511970000{n:03d}"


def _registered(settings: Settings, process: subprocess.Popen[bytes], lanes: int) -> bool:
    assert settings.redis_url
    workers = Worker.all(connection=Redis.from_url(settings.redis_url))
    return sum(w.pid == process.pid for w in workers) == lanes


def _delivered(settings: Settings) -> int:
    sql = "select count(*) from messages where direction = 'outbound' and status = 'delivered'"
    return int(rows(settings, sql)[0][0])


@pytest.mark.stack_env(INBOUND_DEBOUNCE_SECONDS="0", WORKER_CONCURRENCY="8")
def test_forty_conversations_on_two_workers_of_eight_lanes_keep_every_guarantee(
    stack: Stack, settings: Settings, provider: Provider, echo: EchoModel
) -> None:
    stack.env |= provider.serve(stack.url)
    stack.start_api()
    workers = [stack.start_worker(), stack.start_worker()]
    for worker in workers:
        wait_until(lambda w=worker: _registered(settings, w, 8), what="eight lanes per worker")
    users = {u: _user(u) for u in range(40)}
    texts = {u: [f"u{u} m{i} sleep=0.5" for i in range(3)] for u in users}
    for i in range(3):
        for u, user in users.items():
            assert provider.say_as(texts[u][i], user=user, profile_name=f"Pessoa{u}") == 200
    wait_until(_answered(settings, 120), timeout=180, what="all 120 messages answered")
    sent = "select count(*) from ai_results where not superseded"
    wait_until(lambda: [(_delivered(settings),)] == rows(settings, sent), what="every reply")

    assert max(echo.max_concurrent.values()) == 1, "never two runs of one conversation at once"
    assert echo.peak > 2, f"turns ran side by side in a worker (at most {echo.peak} at once)"
    for u, user in users.items():
        replies = provider.bodies_to(user)
        answered = [text for reply in replies for text in reply.removeprefix("re: ").split(" | ")]
        assert answered == texts[u], "each message answered exactly once, in arrival order"
    outbound = rows(settings, "select count(*) from messages where direction = 'outbound'")
    assert outbound == rows(settings, sent), "one reply per turn, no more"
    processes = {process_of(name) for name in _worker_names(settings)}
    assert len(processes) == 2, f"both worker processes answered turns: {processes}"


@pytest.mark.stack_env(
    INBOUND_DEBOUNCE_SECONDS="0", WORKER_CONCURRENCY="8", JOB_RETRIES="0",
    STALE_JOB_SECONDS="600", WORKER_HEARTBEAT_SECONDS="0.5", WORKER_DEAD_AFTER_SECONDS="2",
)  # fmt: skip
def test_a_sigkilled_worker_running_eight_turns_has_all_eight_finished_by_another_once(
    stack: Stack, settings: Settings, provider: Provider, echo: EchoModel
) -> None:
    stack.env |= provider.serve(stack.url)
    stack.start_api()
    doomed = stack.start_worker()
    wait_until(lambda: _registered(settings, doomed, 8), what="the first worker's eight lanes")
    users = [_user(100 + n) for n in range(8)]
    echo.hold()  # the first worker's eight turns wait on the model until it is dead
    for n, user in enumerate(users):
        assert provider.say_as(f"conta {n} sleep=1", user=user, profile_name=f"Conta{n}") == 200
    wait_until(lambda: echo.running == 8, what="eight turns waiting on the model at once")
    survivor = stack.start_worker()
    wait_until(lambda: _registered(settings, survivor, 8), what="the second worker")

    stack.kill(doomed)  # SIGKILL: no clean-up, no goodbye
    echo.release()
    # Neither RQ's retries (JOB_RETRIES=0) nor the relay's stale sweep (600 s) can bring them
    # back within this wait: only the survivor seeing the dead worker's heartbeat stop can.
    wait_until(_answered(settings, 8), timeout=90, what="the eight turns finished elsewhere")
    wait_until(lambda: _delivered(settings) == 8, what="eight replies delivered")
    time.sleep(1)  # time for a duplicate to show up

    for n, user in enumerate(users):
        assert provider.bodies_to(user) == [f"re: conta {n} sleep=1"], "each turn answered once"
    assert rows(settings, "select count(*) from messages where direction = 'outbound'") == [(8,)]
    names = _worker_names(settings)
    assert {process_of(name) for name in names} == {process_of(_lane_of(settings, survivor))}, (
        f"the survivor finished every turn: {names}"
    )


def _lane_of(settings: Settings, process: subprocess.Popen[bytes]) -> str:
    assert settings.redis_url
    workers = Worker.all(connection=Redis.from_url(settings.redis_url))
    return next(w.name for w in workers if w.pid == process.pid)


@pytest.mark.stack_env(INBOUND_DEBOUNCE_SECONDS="0", WORKER_CONCURRENCY="4")
def test_sigterm_lets_every_turn_in_hand_finish(
    stack: Stack, settings: Settings, tenant: Tenant, live_sandbox: TwilioSandbox, echo: EchoModel
) -> None:
    stack.start_api()
    worker = stack.start_worker()
    wait_until(lambda: _registered(settings, worker, 4), what="four lanes")
    for n in range(4):
        form = inbound_form(tenant, f"pensa {n} sleep=2", user=_user(200 + n), ProfileName=f"P{n}")
        assert stack.post(tenant, form) == 200
    wait_until(lambda: echo.running == 4, what="four turns waiting on the model")

    os.kill(worker.pid, signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, stack.logs()

    statuses = rows(settings, "select status from messages where direction = 'inbound'")
    assert statuses == [("answered",)] * 4, "every turn in hand finished before the exit"
    assert rows(settings, "select count(*) from ai_results") == [(4,)]


def _started_by(redis: Redis, worker_name: str, text: str) -> str:
    """Queue a job and record it as started by `worker_name`, as an RQ worker would."""
    queue = Queue(QUEUE_PROCESS, connection=redis)
    job = queue.enqueue("builtins.print", text)
    queue.remove(job)
    with redis.pipeline() as pipe:
        Execution.create(job, ttl=600, pipeline=pipe, worker_name=worker_name)
        pipe.execute()
    return job.id


def test_only_a_dead_process_s_jobs_are_queued_again_and_only_once(redis: Redis) -> None:
    queue = Queue(QUEUE_PROCESS, connection=redis)
    dead = _started_by(redis, "conversa-box-1-aaaaaa.3", "held by a dead process")
    live = _started_by(redis, "conversa-box-2-bbbbbb.0", "held by a live one")
    foreign = _started_by(redis, "0f1e2d3c4b5a", "held by a worker that is not ours")
    redis.set(alive_key("conversa-box-2-bbbbbb"), "1")

    winners: list[list[str]] = []
    threads = [threading.Thread(target=lambda: winners.append(requeue_orphans(redis)))
               for _ in range(4)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(job for found in winners for job in found) == [dead], "requeued exactly once"
    assert queue.job_ids == [dead], "back at the front of its queue"
    started = queue.started_job_registry.get_job_ids(cleanup=False)
    assert sorted(started) == sorted([live, foreign]), "the others are left running"
    assert requeue_orphans(redis) == []

    # A live process names one of its lanes that stopped: that lane's job goes back, alone.
    sibling = _started_by(redis, "conversa-box-2-bbbbbb.1", "held by a live lane")
    assert requeue_orphans(redis, lanes={"conversa-box-2-bbbbbb.0"}) == [live]
    started = queue.started_job_registry.get_job_ids(cleanup=False)
    assert sorted(started) == sorted([sibling, foreign])


def test_worker_settings_refuse_what_cannot_work() -> None:
    with pytest.raises(ValidationError, match="worker_concurrency"):
        Settings(worker_concurrency=0)
    with pytest.raises(ValidationError, match="more than twice WORKER_HEARTBEAT_SECONDS"):
        Settings(worker_heartbeat_seconds=5, worker_dead_after_seconds=10)


@pytest.mark.parametrize("value", ["0", "-3", "many", "257"])
def test_conversa_worker_refuses_a_bad_concurrency(value: str) -> None:
    done = subprocess.run(
        [str(BIN / "conversa"), "worker", "--concurrency", value],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "is not a whole number from 1 to 256" in done.stderr


def test_the_lanes_of_one_process_share_its_name(settings: Settings, tmp_path: Path) -> None:
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "conversa"), "worker", "--concurrency", "3"],
        env={**os.environ, "LOG_LEVEL": "INFO"}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: _registered(settings, process, 3), timeout=120, what="three lanes")
        assert settings.redis_url
        redis = Redis.from_url(settings.redis_url)
        lanes = [w for w in Worker.all(connection=redis) if w.pid == process.pid]
        assert len({process_of(w.name) for w in lanes}) == 1
        queues = Counter(q.name for lane in lanes for q in lane.queues)
        assert queues["transcribe_audio"] == 1, "one lane takes voice notes"
        assert redis.exists(alive_key(process_of(lanes[0].name)))
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert not redis.exists(alive_key(process_of(lanes[0].name))), "a clean exit says goodbye"


class _CuttableLink:
    """A TCP link to the test's Redis that can be cut and restored, as a network or Redis
    outage would: while cut, every connection through it is closed and new ones are refused."""

    def __init__(self, redis_url: str) -> None:
        parts = urlsplit(redis_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = parts._replace(netloc=f"127.0.0.1:{self._listener.getsockname()[1]}").geturl()
        self._up = True
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            with self._lock:
                if not self._up:
                    client.close()
                    continue
                upstream = socket.create_connection(self._target)
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        for end in (source, sink):
            end.close()

    def cut(self) -> None:
        with self._lock:
            self._up = False
            for end in self._open:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
            self._open.clear()

    def restore(self) -> None:
        with self._lock:
            self._up = True


@pytest.mark.stack_env(INBOUND_DEBOUNCE_SECONDS="0", WORKER_CONCURRENCY="4")
def test_a_worker_outlives_a_redis_outage_that_catches_its_turns_finishing(
    stack: Stack, settings: Settings, tenant: Tenant, live_sandbox: TwilioSandbox, echo: EchoModel
) -> None:
    assert settings.redis_url
    stack.start_api()
    link = _CuttableLink(settings.redis_url)
    stack.env = {**stack.env, "REDIS_URL": link.url}  # only the worker goes through the link
    worker = stack.start_worker()
    wait_until(lambda: _registered(settings, worker, 4), what="four lanes")
    echo.hold()
    for n in range(4):
        form = inbound_form(tenant, f"queda {n}", user=_user(300 + n), ProfileName=f"Queda{n}")
        assert stack.post(tenant, form) == 200
    wait_until(lambda: echo.running == 4, what="four turns waiting on the model")

    link.cut()
    echo.release()  # the turns finish, and RQ's bookkeeping after them, while Redis is gone
    time.sleep(5)  # every idle lane polls Redis each second: each meets the outage too
    assert worker.poll() is None, "the worker outlived the outage\n" + stack.logs()
    link.restore()

    # Every turn's reply is in the outbox; the ones whose send could not be queued meanwhile
    # are queued by the relay, and a new message is answered by the same worker.
    form = inbound_form(tenant, "depois da queda", user=_user(310), ProfileName="Depois")
    assert stack.post(tenant, form) == 200
    wait_until(lambda: _delivered(settings) == 5, timeout=60, what="every reply delivered")
    replies = sorted(m["body"] for m in live_sandbox.messages)
    assert replies == ["re: depois da queda", *(f"re: queda {n}" for n in range(4))]
    assert worker.poll() is None
