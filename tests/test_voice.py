"""Voice notes end to end: real speech (espeak-ng, ogg/opus) served by the sandbox behind Basic
auth, transcribed offline by whisper-base, answered like text; the feature gate, failures that
ask the user to type, turn order around a voice note still being transcribed, retries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from channels.media import TEMP_PREFIX
from channels.policy import NOTICES
from channels.sandbox.twilio import TwilioSandbox
from channels.transcription import (
    OpenAITranscriber,
    WhisperTranscriber,
    judge,
    language_hint,
    packaged_model_dir,
)
from server.api.auth import Role, mint_token
from server.jobs.runner import human_message
from server.jobs.transcribe import transcribe_audio
from server.jobs.turn import process_ai_response
from server.settings import Settings
from store.records import Tenant
from tests.conftest import USER, inbound_form, post_inbound, relay, rows, run_jobs
from tests.fakes import ScriptedModel
from tests.providers import Provider, provider
from tests.speech import SpeakFn

__all__ = ["provider"]  # the fixture that runs a test through each WhatsApp provider
from tests.test_brain import give_plan

EXPENSE = ("gastei cinquenta reais no mercado", "pt-br")
GREETING_PT = ("bom dia, tudo bem com você?", "pt-br")
GREETING_EN = ("good morning, how are you today?", "en")
BIRTHDAY_EN = ("my mother's birthday is in December", "en")


@pytest.fixture(autouse=True)
def _model_dir(whisper_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Use the session's joined model (the job would join it under each test's DATA_DIR)."""
    monkeypatch.setenv("TRANSCRIPTION_MODEL_DIR", str(whisper_dir))


def _voice_note(
    client: TestClient, settings: Settings, tenant: Tenant, url: str, content_type: str
) -> None:
    form = inbound_form(
        tenant, "", NumMedia="1", MediaUrl0=url, MediaContentType0=content_type,
        MessageType="audio",
    )  # fmt: skip
    assert post_inbound(client, settings, tenant, form).status_code == 200


def _leftovers() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(TEMP_PREFIX + "*")}


# -- the transcriber -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sentence", "language", "words"),
    [
        (EXPENSE, "pt", ["cinquenta", "reais", "mercado"]),
        (GREETING_PT, "pt", ["bom dia", "tudo bem"]),
        (GREETING_EN, "en", ["good morning", "how are you"]),
        (BIRTHDAY_EN, "en", ["mother", "birthday", "december"]),
    ],
)
def test_the_offline_model_hears_portuguese_and_english(
    speak: SpeakFn,
    clips: Path,
    whisper_dir: Path,
    sentence: tuple[str, str],
    language: str,
    words: list[str],
) -> None:
    path = clips / "heard.ogg"
    path.write_bytes(speak(*sentence))
    transcript = WhisperTranscriber(whisper_dir).transcribe(path, language=language)
    heard = transcript.text.lower()
    assert all(word in heard for word in words), transcript
    assert transcript.language == language and transcript.seconds
    assert transcript.confidence is not None and 0 < transcript.confidence <= 1


def test_the_packaged_model_is_joined_once(whisper_dir: Path) -> None:
    model = whisper_dir / "model.bin"
    stamp = model.stat().st_mtime_ns
    assert packaged_model_dir(whisper_dir.parent) == whisper_dir
    assert model.stat().st_mtime_ns == stamp
    assert {p.name for p in whisper_dir.iterdir()} == {
        "model.bin", "config.json", "tokenizer.json", "vocabulary.txt",
    }  # fmt: skip


def test_language_hints_and_unsure_transcripts() -> None:
    assert language_hint("pt-BR") == "pt" and language_hint("en_US") == "en"
    assert language_hint("xx-YY") is None and language_hint(None) is None
    text, confidence, unsure = judge([(" Gastei 50 reais.", -0.3, 0.02)])
    assert (text, unsure) == ("Gastei 50 reais.", False) and confidence == pytest.approx(0.741)
    assert judge([(" Aguei sem ter ice.", -1.3, 0.05)])[2] is True
    assert judge([(" ...", -0.4, 0.9)])[2] is True
    assert judge([])[2] is True


class _Transcriptions(BaseHTTPRequestHandler):
    """An OpenAI-compatible `/v1/audio/transcriptions` that answers verbose JSON."""

    seen: list[bytes] = []  # noqa: RUF012

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(body)
        answer = {
            "task": "transcribe", "language": "portuguese", "duration": 2.7,
            "text": "Gastei cinquenta reais no mercado.",
            "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": 2.7,
                          "text": " Gastei cinquenta reais no mercado.", "tokens": [1],
                          "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 0.8,
                          "no_speech_prob": 0.01}],
        }  # fmt: skip
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def transcriptions_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Transcriptions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_the_production_transcriber_speaks_the_openai_protocol(
    transcriptions_server: str, speak: SpeakFn, clips: Path
) -> None:
    path = clips / "upload.ogg"
    path.write_bytes(speak(*EXPENSE))
    transcriber = OpenAITranscriber(model="whisper-1", api_key="k", base_url=transcriptions_server)
    transcript = transcriber.transcribe(path, language="pt")
    assert transcript.text == "Gastei cinquenta reais no mercado."
    assert (transcript.language, transcript.unsure, transcript.seconds) == ("pt", False, 2.7)
    upload = _Transcriptions.seen[-1]
    assert b'name="model"' in upload and b"whisper-1" in upload and b"OggS" in upload
    assert b'name="language"' in upload and b"verbose_json" in upload


# -- through the webhook, the queue and the graph ---------------------------------------------


def test_a_voice_note_records_an_expense_like_text(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
    speak: SpeakFn,
) -> None:
    give_plan(settings, tenant, ["finance", "audio_transcription"])
    llm.structured({"route": "finance", "reason": "an expense"})
    llm.call_tool(
        "record_transaction",
        {"kind": "expense", "amount": "50", "category": "groceries", "date": "hoje"},
    )
    llm.say("Anotei R$ 50,00 em mercado.")
    before = _leftovers()
    url = sandbox.add_media(speak(*EXPENSE), "audio/ogg", account_sid=tenant.twilio_account_sid)

    _voice_note(client, settings, tenant, url, "audio/ogg")
    run_jobs(settings)

    assert [m["body"] for m in sandbox.wait_for_messages(1)] == ["Anotei R$ 50,00 em mercado."]
    ((status, transcript, language, unsure, seconds, error, processed),) = rows(
        settings,
        "select transcription_status, transcript, transcript_language, transcript_unsure, "
        "audio_seconds, transcription_error, status from messages where direction = 'inbound'",
    )
    assert (status, language, error, processed) == ("done", "pt", None, "answered")
    assert "cinquenta" in transcript.lower() and "mercado" in transcript.lower()
    assert unsure is not None and 1.0 < seconds < 6.0
    router_request = json.dumps(llm.requests[0], ensure_ascii=False)
    assert f"[voice note] {transcript}" in router_request
    entries = rows(settings, "select kind, amount::text from finance_entries")
    assert entries == [("expense", "50.00")]
    assert sandbox.media_fetches[-1]["authorized"] is True
    assert _leftovers() <= before

    bearer = mint_token(settings, subject="qa", role=Role.support_agent, tenant_id=tenant.id)
    listed = client.get(
        f"/api/v1/tenants/{tenant.id}/messages",
        params={"direction": "inbound"},
        headers={"Authorization": f"Bearer {bearer}"},
    )
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert item["transcript"] == transcript and item["transcription_status"] == "done"

    # A retried or repeated job changes nothing and sends nothing twice.
    ((message_id, cid),) = rows(
        settings, "select id, correlation_id from messages where direction = 'inbound'"
    )
    assert transcribe_audio(str(tenant.id), message_id, cid) == "already settled"
    run_jobs(settings)
    assert len(sandbox.messages) == 1 and llm.remaining == 0


def test_without_the_feature_the_user_is_asked_to_type_and_nothing_is_downloaded(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
    speak: SpeakFn,
) -> None:
    give_plan(settings, tenant, ["finance"])
    url = sandbox.add_media(speak(*EXPENSE), "audio/ogg", account_sid=tenant.twilio_account_sid)

    _voice_note(client, settings, tenant, url, "audio/ogg")
    run_jobs(settings)

    assert [m["body"] for m in sandbox.wait_for_messages(1)] == [NOTICES["audio"]["pt"]]
    assert sandbox.media_fetches == [] and llm.requests == []
    assert rows(
        settings,
        "select transcription_status, transcription_error, status from messages "
        "where direction = 'inbound'",
    ) == [("skipped", "The user's plan does not include audio_transcription.", "answered")]


@pytest.mark.parametrize(
    ("served", "reason"),
    [
        ("lying", "type_mismatch"),
        ("elsewhere", "host_not_allowed"),
        ("missing", "http_error"),
        ("tone", "too_long"),
    ],
)
def test_a_voice_note_that_cannot_be_heard_gets_a_polite_reply_and_a_recorded_error(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
    clips: Path,
    monkeypatch: pytest.MonkeyPatch,
    served: str,
    reason: str,
) -> None:
    from tests.speech import make_tone

    give_plan(settings, tenant, ["finance", "audio_transcription"])
    account = tenant.twilio_account_sid
    monkeypatch.setenv("MEDIA_MAX_AUDIO_SECONDS", "2")
    url = {
        "lying": lambda: sandbox.add_media(b"<html>hi</html>", "audio/ogg", account_sid=account),
        "elsewhere": lambda: "https://evil.example.com/voice.ogg",
        "missing": lambda: sandbox.url + f"/2010-04-01/Accounts/{account}/Messages/MM1/Media/ME1",
        "tone": lambda: sandbox.add_media(
            make_tone(clips, 4.0).read_bytes(), "audio/ogg", account_sid=account
        ),
    }[served]()
    before = _leftovers()

    _voice_note(client, settings, tenant, url, "audio/ogg")
    run_jobs(settings)

    assert [m["body"] for m in sandbox.wait_for_messages(1)] == [NOTICES["audio_failed"]["pt"]]
    ((status, error, processed),) = rows(
        settings,
        "select transcription_status, transcription_error, status from messages "
        "where direction = 'inbound'",
    )
    assert (status, processed) == ("failed", "answered") and f"({reason})" in error
    assert llm.requests == [] and _leftovers() <= before


def test_a_text_sent_behind_a_voice_note_waits_for_it_and_both_are_answered_in_order(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
    speak: SpeakFn,
) -> None:
    give_plan(settings, tenant, ["audio_transcription"])
    url = sandbox.add_media(speak(*GREETING_PT), "audio/ogg", account_sid=tenant.twilio_account_sid)
    _voice_note(client, settings, tenant, url, "audio/ogg")
    assert post_inbound(client, settings, tenant, inbound_form(tenant, "e aí?")).status_code == 200
    relay(settings)
    sql = "select id, correlation_id from messages where body = 'e aí?'"
    ((text_id, cid),) = rows(settings, sql)

    # The text's own turn job runs first: it must not answer past the untranscribed voice note.
    assert process_ai_response(str(tenant.id), text_id, cid) != "answered"
    assert sandbox.messages == []

    llm.say("Bom dia! Tudo ótimo, e com você?")
    run_jobs(settings)

    assert [m["body"] for m in sandbox.wait_for_messages(1)] == ["Bom dia! Tudo ótimo, e com você?"]
    (request,) = llm.requests
    users = [m["content"] for m in request["messages"] if m["role"] == "user"]
    assert users[-2].startswith("[voice note] ") and "bom dia" in users[-2].lower()
    assert users[-1] == "e aí?"
    assert rows(settings, "select status from messages where direction = 'inbound'") == [
        ("answered",), ("answered",),
    ]  # fmt: skip


def test_the_worker_process_transcribes_in_process_with_the_model_loaded_once(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
    speak: SpeakFn,
) -> None:
    give_plan(settings, tenant, ["audio_transcription"])
    account = tenant.twilio_account_sid
    for sentence, user in ((GREETING_PT, USER), (GREETING_EN, "whatsapp:+5511977776666")):
        url = sandbox.add_media(speak(*sentence), "audio/ogg", account_sid=account)
        form = inbound_form(
            tenant, "", user=user, NumMedia="1", MediaUrl0=url, MediaContentType0="audio/ogg"
        )
        assert post_inbound(client, settings, tenant, form).status_code == 200
    llm.say("Bom dia!").say("Good morning!")
    relay(settings)

    # A real `conversa worker` (it forks a horse per job, but not for transcriptions).
    done = subprocess.run(
        [str(Path(sys.executable).parent / "conversa"), "worker", "--burst"],
        env={**os.environ, "LOG_LEVEL": "INFO"},
        capture_output=True,
        timeout=300,
        check=False,
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, output
    assert output.count("speech model loaded") == 1, output
    assert output.count("voice note transcribed") == 2, output
    assert sorted(m["body"] for m in sandbox.wait_for_messages(2)) == ["Bom dia!", "Good morning!"]


def test_an_unsure_transcript_is_marked_for_the_model() -> None:
    from datetime import UTC, datetime
    from uuid import uuid4

    from store.records import Message

    message = Message(
        id=7, tenant_id=uuid4(), conversation_id=uuid4(), direction="inbound",
        provider_message_id="MM1", idempotency_key=None, kind="media", body="", from_address="a",
        to_address="b", media=[{"url": "https://api.twilio.com/m", "content_type": "audio/ogg"}],
        status="received", error=None, error_code=None, purpose="reply", template_sid=None,
        attempts=0, correlation_id="c", created_at=datetime.now(UTC), enqueued_at=None,
        processed_at=None, transcription_status="done", transcript="paguei cem reais",
        transcript_unsure=True,
    )  # fmt: skip
    assert human_message(message).content == (
        "[voice note] paguei cem reais (transcription unsure)"
    )
    failed = Message(**{**message.__dict__, "transcription_status": "failed"})
    assert "which you cannot open" in str(human_message(failed).content)


# -- budgets -----------------------------------------------------------------------------------


def _money_budget(settings: Settings, tenant: Tenant, max_cost: str) -> None:
    rows(settings, "insert into budgets (tenant_id, scope, period, max_cost) "
         "values (%s, 'tenant', 'month', %s) returning id", tenant.id, max_cost)  # fmt: skip


def test_a_transcription_is_billed_by_the_audio_it_heard(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
    speak: SpeakFn,
) -> None:
    give_plan(settings, tenant, ["audio_transcription"])
    _money_budget(settings, tenant, "10")
    llm.say("Bom dia!")
    url = sandbox.add_media(speak(*GREETING_PT), "audio/ogg", account_sid=tenant.twilio_account_sid)
    _voice_note(client, settings, tenant, url, "audio/ogg")
    run_jobs(settings)

    assert [m["body"] for m in sandbox.wait_for_messages(1)] == ["Bom dia!"]
    ((heard,),) = rows(settings, "select audio_seconds from messages where direction = 'inbound'")
    ((seconds, cost),) = rows(
        settings, "select audio_seconds, cost from usage_ledger where kind = 'transcription'"
    )
    assert float(seconds) == pytest.approx(heard, abs=0.01) and heard > 0
    assert float(cost) == pytest.approx(heard * 0.006 / 60, abs=1e-6)  # the default price
    assert rows(settings, "select count(*) from budget_holds") == [(0,)]


def test_a_spent_budget_skips_the_transcription_and_says_so(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
    speak: SpeakFn,
) -> None:
    give_plan(settings, tenant, ["audio_transcription"])
    _money_budget(settings, tenant, "0")
    url = sandbox.add_media(speak(*GREETING_PT), "audio/ogg", account_sid=tenant.twilio_account_sid)
    _voice_note(client, settings, tenant, url, "audio/ogg")
    run_jobs(settings)

    assert [m["body"] for m in sandbox.wait_for_messages(1)] == [NOTICES["over_budget"]["pt"]]
    ((status, error),) = rows(
        settings,
        "select transcription_status, transcription_error from messages "
        "where direction = 'inbound'",
    )
    assert status == "skipped" and "budget" in error
    assert rows(settings, "select count(*) from usage_ledger where kind <> 'send'") == [(0,)]
    assert llm.requests == []


def test_a_voice_note_is_heard_through_either_provider(
    settings: Settings, tenant: Tenant, provider: Provider, llm: ScriptedModel, speak: SpeakFn
) -> None:
    give_plan(settings, tenant, ["audio_transcription"])
    llm.say("Bom dia para você também!")
    assert provider.voice_note(speak(*GREETING_PT), "audio/ogg") == 200
    run_jobs(settings)

    assert provider.bodies() == ["Bom dia para você também!"]
    ((status, transcript),) = rows(
        settings,
        "select transcription_status, transcript from messages where direction = 'inbound'",
    )
    assert status == "done" and "bom dia" in transcript.lower()
    assert f"[voice note] {transcript}" in json.dumps(llm.requests[0], ensure_ascii=False)
