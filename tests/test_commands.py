"""The commands a newcomer runs: `conversa demo`, `langgraph dev`, and start-up checks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from graphs.prompts import USER_DATA_RULE
from server.cli.chat import Chat, converse
from server.cli.demo import stop_process
from store.embedded import free_port
from tests.conftest import ROOT
from tests.fakes import ScriptedModel

BIN = Path(sys.executable).parent


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "LLM_", "LANGSMITH_", "LANGCHAIN_"))
        and k
        not in {
            "DATABASE_URL",
            "REDIS_URL",
            "TWILIO_API_BASE_URL",
            "CLOUD_API_BASE_URL",
            "PUBLIC_BASE_URL",
        }
    }
    return {**env, "DATA_DIR": str(tmp_path / "data"), **extra}


def _demo(
    tmp_path: Path, *says: str, channel: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    args = [str(BIN / "conversa"), "demo"]
    if channel is not None:
        args += ["--channel", channel]
    for text in says:
        args += ["--say", text]
    return subprocess.run(
        args, env=_clean_env(tmp_path, **env), capture_output=True, text=True, timeout=240,
        cwd=tmp_path,
    )  # fmt: skip


def test_demo_says_and_prints_each_reply(tmp_path: Path) -> None:
    result = _demo(tmp_path, "Oi, tudo bem?", "Who are you?")

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for step in ("PostgreSQL", "Redis", "migrations", "Twilio", "offline model", "API", "worker"):
        assert step in out, f"the demo did not report starting {step}:\n{out}"
    assert out.count(" done (") >= 7, "each step says how long it took"
    assert re.search(r"Support console: http://127\.0\.0\.1:\d+/support#token=\S+\.\S+\.\S+", out)
    replies = [line for line in out.splitlines() if line.startswith("assistant> ")]
    assert len(replies) == 2, out
    assert "offline" in replies[0] and "Oi, tudo bem?" in replies[0]
    assert "offline model" in replies[1] and "Who are you?" in replies[1]

    # A second run reuses the database the first one created: the same conversation goes on.
    again = _demo(tmp_path, "De novo")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "assistant> " in again.stdout
    log = (tmp_path / "data" / "logs" / "worker.log").read_text()
    turns = [line for line in log.splitlines() if "turn answered" in line]
    threads = {re.search(r"thread_id=(\S+)", line).group(1) for line in turns}  # type: ignore[union-attr]
    assert len(turns) == 3 and len(threads) == 1, turns


def test_the_demo_shows_each_specialist_and_a_handoff_offline(tmp_path: Path) -> None:
    result = _demo(
        tmp_path,
        "gastei 45,90 no mercado ontem",
        "qual meu saldo este mês?",
        "o aniversário da minha mãe é 12 de dezembro",
        "quais as próximas datas?",
        "remind me to call mom in 5 minutes",
        "quero falar com um atendente",
    )

    assert result.returncode == 0, result.stdout + result.stderr
    # A reply may take several lines: it runs until the next line the chat prints.
    replies = re.findall(r"^assistant> (.*?)(?=^you> |^assistant> |\Z)", result.stdout, re.S | re.M)
    expense, balance, birthday, upcoming, reminder, handoff = replies
    assert "R$ 45,90" in expense and "#" in expense
    assert "R$ 45,90" in balance and "saldo" in balance.lower()
    assert "12 de dezembro" in birthday
    assert "12/12" in upcoming
    assert "remind" in reminder.lower() and "call mom" in reminder
    assert "pessoa da nossa equipe" in handoff

    # The next run finds the conversation with a person, gives it back, and the bot answers.
    again = _demo(tmp_path, "oi de novo")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "handing it back to the assistant" in again.stdout
    assert "assistant> " in again.stdout


def test_the_demo_chats_through_the_cloud_api_and_a_plain_run_is_back_on_twilio(
    tmp_path: Path,
) -> None:
    result = _demo(tmp_path, "gastei 30 reais no almoço", channel="cloud")

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Cloud API sandbox: http://127.0.0.1:" in out and "Twilio API sandbox" not in out
    assert "through Meta's WhatsApp Cloud API" in out
    (reply,) = [line for line in out.splitlines() if line.startswith("assistant> ")]
    assert "R$ 30,00" in reply and "almoço" in reply, out
    # The sandbox posted the reply's statuses, signed, to /webhooks/cloud, and they applied.
    api_log = (tmp_path / "data" / "logs" / "api.log").read_text()
    delivered = [line for line in api_log.splitlines()
                 if "delivery status" in line and "status=delivered" in line]  # fmt: skip
    assert delivered and "applied=True" in delivered[0], api_log

    # Without --channel the demo tenant is back on Twilio: the same conversation goes on.
    again = _demo(tmp_path, "qual meu saldo este mês?")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Twilio API sandbox" in again.stdout and "Cloud API sandbox" not in again.stdout
    assert "through Twilio" in again.stdout
    (balance,) = [line for line in again.stdout.splitlines() if line.startswith("assistant> ")]
    assert "R$ 30,00" in balance, again.stdout


def test_demo_reports_what_went_wrong_and_exits_non_zero(tmp_path: Path) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    result = _demo(tmp_path, "Oi", DATABASE_URL=dead)

    assert result.returncode == 1
    assert "demo failed" in result.stderr
    assert "Connection refused" in result.stderr or "connection" in result.stderr.lower()


def test_serve_refuses_to_start_before_migrations(pg_url: str, tmp_path: Path) -> None:
    info = psycopg.conninfo.conninfo_to_dict(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("drop database if exists conversa_unmigrated with (force)")
        conn.execute("create database conversa_unmigrated")
    url = psycopg.conninfo.make_conninfo(**{**info, "dbname": "conversa_unmigrated"})

    result = subprocess.run(
        [BIN / "conversa", "serve", "--port", str(free_port())],
        env=_clean_env(tmp_path, DATABASE_URL=url, REDIS_URL="redis://127.0.0.1:1/0"),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "conversa migrate" in result.stderr


@contextmanager
def _langgraph_dev(tmp_path: Path, **env: str) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "langgraph.log").open("w")
    process = subprocess.Popen(
        [BIN / "langgraph", "dev", "--no-browser", "--no-reload", "--port", str(port)],
        cwd=ROOT,
        env=_clean_env(tmp_path, **env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise AssertionError((tmp_path / "langgraph.log").read_text()[-3000:])
        yield url
    finally:
        stop_process(process, timeout=20)
        log.close()


@pytest.fixture
def langgraph_dev(tmp_path: Path) -> Iterator[str]:
    with _langgraph_dev(tmp_path) as url:
        yield url


def _studio_run(url: str, text: str, context: dict[str, Any]) -> tuple[dict[str, Any], str]:
    thread = httpx.post(f"{url}/threads", json={}, timeout=30).json()
    response = httpx.post(
        f"{url}/threads/{thread['thread_id']}/runs/wait",
        json={
            "assistant_id": "assistant",
            "input": {"messages": [{"role": "user", "content": text}]},
            "context": context,
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json(), thread["thread_id"]


def test_a_prompt_edited_in_studio_reaches_the_model_with_no_code_change(
    tmp_path: Path, llm: ScriptedModel, llm_server: Any
) -> None:
    llm.structured({"route": "finance", "reason": "money"}).say("Anotado, chefe!")
    edited = "You are the finance specialist. Call the user 'chefe'. {language_name}"

    with _langgraph_dev(
        tmp_path, OPENAI_BASE_URL=llm_server.base_url, OPENAI_API_KEY="studio"
    ) as url:
        result, _ = _studio_run(
            url, "gastei 10 reais", {"features": ["finance"], "finance_prompt": edited}
        )

    assert result["reply"] == "Anotado, chefe!" and result["route"] == "finance"
    router, finance = llm.requests
    assert router["response_format"]["json_schema"]["name"] == "RouteDecision"
    assert finance["messages"][0]["content"] == (
        edited.replace("{language_name}", "Brazilian Portuguese") + "\n" + USER_DATA_RULE
    ), "the edited prompt, and the rule that the user's words are data (appended)"
    assert "record_transaction" in {t["function"]["name"] for t in finance["tools"]}


def test_studio_shows_the_handoff_interrupt(langgraph_dev: str) -> None:
    result, thread_id = _studio_run(
        langgraph_dev, "quero falar com um atendente", {"features": ["human_handoff"]}
    )

    assert result["route"] == "handoff"
    state = httpx.get(f"{langgraph_dev}/threads/{thread_id}/state", timeout=30).json()
    assert state["next"] == ["wait_for_human"]
    (interrupt,) = state["tasks"][0]["interrupts"]
    assert interrupt["value"][0]["action_request"]["action"] == "handoff"


def test_langgraph_dev_serves_the_assistant_graph(langgraph_dev: str) -> None:
    assistants = httpx.post(f"{langgraph_dev}/assistants/search", json={}, timeout=30).json()
    assert "assistant" in {a["graph_id"] for a in assistants}

    thread = httpx.post(f"{langgraph_dev}/threads", json={}, timeout=30).json()
    response = httpx.post(
        f"{langgraph_dev}/threads/{thread['thread_id']}/runs/wait",
        json={
            "assistant_id": "assistant",
            "input": {"messages": [{"role": "user", "content": "Oi, tudo bem?"}]},
            "context": {"tenant_name": "Studio", "user_name": "Prompt Engineer"},
        },
        timeout=60,
    )

    assert response.status_code == 200, response.text
    reply = response.json()["reply"]
    assert "offline" in reply and "Oi, tudo bem?" in reply
    state = httpx.get(f"{langgraph_dev}/threads/{thread['thread_id']}/state", timeout=30).json()
    assert [m["type"] for m in state["values"]["messages"]] == ["human", "ai"]


@pytest.mark.parametrize("channel", [None, "cloud"])
def test_the_demo_taps_the_buttons_and_list_a_reply_offers(
    tmp_path: Path, channel: str | None
) -> None:
    result = _demo(
        tmp_path,
        "gastei 30 reais no almoço",
        "/press 1",
        "/press 1",
        "gastei 12,50 no café",
        "quero apagar um lançamento",
        "/press 1",
        "tenho que pagar a conta de luz amanhã às 9h",
        "/press 1",
        channel=channel,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    replies = re.findall(r"^assistant> (.*?)(?=^you> |^assistant> |\Z)", result.stdout, re.S | re.M)
    expense, undone, stale, coffee, listed, deleted, proposed, scheduled = replies
    assert "[1] Desfazer #1" in expense and "/press N" in expense
    assert undone.startswith("Desfeito: apaguei o lançamento #1")
    assert stale.startswith("Essa pergunta não vale mais")
    assert "[1] Desfazer #2" in coffee
    assert "«Escolher»" in listed and "[1] #2 R$ 12,50" in listed
    assert deleted.startswith("Apaguei o lançamento #2")
    assert "[1] Sim" in proposed and "[2] Não" in proposed
    assert scheduled.startswith("Combinado: lembrete #1")


class _Offering(Chat):
    """A chat whose latest reply offered two buttons; it records what was tapped."""

    def __init__(self) -> None:
        self.offered = {
            "choices": {
                "button": "",
                "options": [{"id": "a", "title": "Sim"}, {"id": "b", "title": "Não"}],
            }
        }
        self.tapped: list[int] = []

    def press(self, number: int) -> None:
        self._pressable(number)
        self.tapped.append(number)

    def unseen(self) -> list[str]:
        return [f"tapped {self.tapped.pop()}"] if self.tapped else []


@pytest.mark.parametrize(
    ("line", "error"),
    [("/press", "usage: /press N"), ("/press dois", "usage: /press N"),
     ("/press 3", "from 1 to 2"), ("/press 0", "from 1 to 2")],
)  # fmt: skip
def test_the_chat_refuses_a_press_it_cannot_make(line: str, error: str) -> None:
    chat, printed = _Offering(), []
    assert converse(chat, [line], timeout=1, out=printed.append) == 1
    assert any(error in p for p in printed), printed
    assert chat.tapped == []
    nothing = _Offering()
    nothing.offered = None
    assert converse(nothing, ["/press 1"], timeout=1, out=printed.append) == 1
    assert "no reply has offered" in printed[-1]


def test_the_chat_taps_the_option_asked_for() -> None:
    printed: list[str] = []
    assert converse(_Offering(), ["/press 2"], timeout=5, out=printed.append) == 0
    assert printed == ["you> /press 2", "assistant> tapped 2"]
