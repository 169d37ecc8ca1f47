"""The stand-in model can be slow on purpose: fixed, uniform or lognormal seconds per call."""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from langchain_openai import ChatOpenAI

from graphs.offline.latency import Latency, LatencyError
from graphs.offline.llm_server import ChatCompletionsServer
from graphs.offline.model import serve


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", Latency("fixed", 0.0)),
        (" 0.5 ", Latency("fixed", 0.5)),
        ("uniform:0.5,1.5", Latency("uniform", 0.5, 1.5)),
        ("uniform:1,1", Latency("uniform", 1.0, 1.0)),
        ("lognormal:1.0,0.3", Latency("lognormal", 1.0, 0.3)),
    ],
)
def test_each_form_reads(text: str, expected: Latency) -> None:
    assert Latency.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "slow", "-1", "nan", "inf", "601", "uniform:2,1", "uniform:1", "uniform:1,2,3",
     "lognormal:0,0.3", "normal:1,2", "uniform:a,b", ":1,2"],
)  # fmt: skip
def test_a_bad_latency_is_refused_with_the_forms_it_takes(text: str) -> None:
    with pytest.raises(LatencyError, match="latency"):
        Latency.parse(text)


def test_draws_keep_to_their_shape() -> None:
    rng = random.Random(7)
    uniform = [Latency("uniform", 0.5, 1.5).draw(rng) for _ in range(2000)]
    assert min(uniform) >= 0.5 and max(uniform) <= 1.5
    assert statistics.median(uniform) == pytest.approx(1.0, abs=0.05)
    lognormal = [Latency("lognormal", 1.0, 0.3).draw(rng) for _ in range(2000)]
    assert min(lognormal) > 0
    assert statistics.median(lognormal) == pytest.approx(1.0, rel=0.05)
    assert statistics.mean(lognormal) > statistics.median(lognormal)  # the long right tail
    assert Latency("fixed", 0.25).draw(rng) == 0.25


class _AllAtOnce(Latency):
    """A fixed latency that also waits, at its draw, until every expected call is waiting: a
    server that answered one call at a time would never get there (the barrier breaks)."""

    def __init__(self, seconds: float, calls: int) -> None:
        super().__init__("fixed", seconds)
        object.__setattr__(self, "barrier", threading.Barrier(calls, timeout=30))

    def draw(self, rng: random.Random | None = None) -> float:
        self.barrier.wait()  # type: ignore[attr-defined]
        return super().draw(rng)


def test_every_call_waits_its_latency_and_concurrent_calls_wait_together() -> None:
    latency = _AllAtOnce(0.3, calls=4)
    with ChatCompletionsServer(lambda _: {"content": "ok"}, latency=latency) as server:
        model = ChatOpenAI(base_url=server.base_url, api_key="x", model="m", max_retries=0)  # type: ignore[arg-type]
        spent: list[float] = []

        def ask() -> None:
            started = time.monotonic()
            assert model.invoke("hi").content == "ok"
            spent.append(time.monotonic() - started)

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert not latency.barrier.broken  # type: ignore[attr-defined]
    assert len(spent) == 4 and min(spent) >= 0.3  # a sleep never ends early


def test_the_offline_model_takes_its_latency_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OFFLINE_LLM_LATENCY", "uniform:0.01,0.02")
    server = serve()
    try:
        assert server.latency == Latency("uniform", 0.01, 0.02)
    finally:
        server.stop()
    monkeypatch.setenv("OFFLINE_LLM_LATENCY", "soon")
    with pytest.raises(LatencyError, match="soon"):
        serve()


def test_conversa_says_what_is_wrong_with_a_bad_latency(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "OFFLINE_LLM_LATENCY": "soon",
        "DATABASE_URL": "postgresql://127.0.0.1:1/nowhere",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "conversa"), "check"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "conversa: latency 'soon': use seconds" in done.stderr
    assert "Traceback" not in done.stderr
