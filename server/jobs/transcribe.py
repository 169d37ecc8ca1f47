"""The `transcribe_audio` job: download a voice note, transcribe it, and queue its turn.

The relay sends an inbound message with audio here instead of to `process_ai_response`; the
turn job does not answer a conversation past a voice note still waiting for its transcript
(`inbox.unanswered_inbound`). This job settles the voice note (done, failed or skipped, with
the reason kept on the message) and then queues the turn, which answers the transcript as the
user's text, or asks the user to type when there is none. Run again, it changes nothing and
only queues the turn again (harmless: turns are idempotent).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from uuid import UUID

import psycopg
import structlog
from redis import RedisError

from channels.base import Media
from channels.media import MediaPolicy, MediaRefused, download_media, is_audio
from channels.registry import channel_for
from channels.transcription import (
    OpenAITranscriber,
    Transcriber,
    TranscriptionFailed,
    WhisperTranscriber,
    language_hint,
    packaged_model_dir,
)
from graphs.features import AUDIO_TRANSCRIPTION
from server import metrics
from server.budgets import (
    BudgetExhausted,
    raise_alerts,
    record_usage,
    spender_for,
    transcription_cost,
)
from server.jobs.common import connect, final_attempt, redis_for
from server.jobs.queue import enqueue_turn
from server.logs import bind_correlation_id
from server.settings import Settings, VoiceSettings, get_settings
from store import budgets, conversations, identity, inbox, tenants
from store.budgets import Spender, Usage
from store.locks import transcribe_lock, try_lock, unlock
from store.records import Message, Tenant, User

log = structlog.get_logger(__name__)

Conn = psycopg.Connection[Any]


def transcribe_audio(tenant_id: str, message_id: int, correlation_id: str) -> str:
    """Transcribe voice note `message_id`, then queue the turn that answers it."""
    settings = get_settings()
    bind_correlation_id(correlation_id, message_id=message_id, job="transcribe_audio")
    with connect(settings, tenant_id) as conn:
        message = inbox.message_by_id(conn, message_id)
        if message is None or message.direction != "inbound":
            log.warning("no such inbound message; nothing to do")
            return "missing"
        if not message.awaits_transcript:
            _queue_turn(conn, settings, message)
            return "already settled"
        lock = transcribe_lock(message.id)
        if not try_lock(conn, lock):
            log.info("another job is transcribing this message")
            return "busy"
        try:
            outcome = _settle(conn, settings, VoiceSettings(), message)
        finally:
            unlock(conn, lock)
        _queue_turn(conn, settings, message)
        return outcome


def _settle(conn: Conn, settings: Settings, voice: VoiceSettings, message: Message) -> str:
    """Transcribe the message, or record why not; return the outcome."""
    conversation = conversations.conversation_by_id(conn, message.conversation_id)
    assert conversation is not None
    tenant = tenants.tenant_by_id(conn, conversation.tenant_id)
    user = tenants.user_by_id(conn, conversation.user_id)
    assert tenant is not None and user is not None
    skip = _skip_reason(conn, tenant, user)
    if skip is not None:
        inbox.record_transcript(conn, message.id, status="skipped", error=skip)
        log.info("voice note not transcribed", reason=skip)
        return "skipped"
    item = next(m for m in message.media if is_audio(str(m.get("content_type", ""))))
    audio = Media(str(item.get("url", "")), str(item.get("content_type", "")))
    try:
        source = channel_for(settings, tenant).media_source(audio)
        with download_media(
            source.url, audio.content_type, policy=media_policy(settings, voice), auth=source.auth
        ) as media:
            log.info("voice note downloaded", bytes=media.size, seconds=media.seconds)
            hint = language_hint(user.locale or tenant.default_locale)
            spender = spender_for(tenant, user)
            estimate = media.seconds or voice.media_max_audio_seconds
            hold = budgets.reserve(
                conn, spender, tokens=0, cost=transcription_cost(settings, estimate),
                hold_seconds=settings.budget_hold_seconds,
            )  # fmt: skip
            try:
                with metrics.transcription_timer(voice.transcription_provider):
                    transcript = transcriber(settings, voice).transcribe(media.path, language=hint)
            except BaseException:
                budgets.release(conn, hold)
                raise
            seconds = media.seconds
            _charge(conn, settings, tenant, spender, hold, seconds or transcript.seconds,
                    message.correlation_id)  # fmt: skip
    except BudgetExhausted as exc:
        metrics.observe_budget_refusal(exc.budget.scope, exc.budget.period)
        reason = f"Not transcribed: {exc}."
        inbox.record_transcript(conn, message.id, status="skipped", error=reason)
        log.info("voice note not transcribed: budget spent", reason=str(exc))
        return "skipped"
    except MediaRefused as exc:
        return _fail(conn, message, f"download refused ({exc.reason}): {exc.detail}")
    except Exception as exc:  # unreachable host, server error, a crash in the decoder...
        transient = not isinstance(exc, TranscriptionFailed) or exc.transient
        error = f"{type(exc).__name__}: {exc}"
        if transient and not final_attempt():
            inbox.note_transcription_attempt(conn, message.id, error)
            log.warning("voice note not transcribed yet; the job will retry", error=error)
            raise
        return _fail(conn, message, error)
    if not transcript.text:
        return _fail(conn, message, "nothing was said (empty transcript)")
    inbox.record_transcript(
        conn, message.id, status="done", transcript=transcript.text,
        language=transcript.language, confidence=transcript.confidence,
        unsure=transcript.unsure, audio_seconds=seconds or transcript.seconds,
    )  # fmt: skip
    log.info(
        "voice note transcribed", seconds=seconds, language=transcript.language,
        confidence=transcript.confidence, unsure=transcript.unsure,
    )  # fmt: skip
    return "transcribed"


def _charge(
    conn: Conn,
    settings: Settings,
    tenant: Tenant,
    spender: Spender,
    hold: UUID | None,
    seconds: float,
    cid: str,
) -> None:
    """Settle a transcription's hold with the audio's real length (and alert if it crossed)."""
    cost = transcription_cost(settings, seconds)
    usage = Usage(kind="transcription", audio_seconds=round(seconds, 2), cost=cost,
                  model=VoiceSettings().transcription_provider, correlation_id=cid)  # fmt: skip
    try:
        alerts = record_usage(conn, spender, usage, hold)
    except psycopg.Error as exc:  # the transcript is worth more than its bill
        log.error("could not record a transcription's usage", error=str(exc))
        return
    raise_alerts(settings, tenant, alerts, cid)


def _skip_reason(conn: Conn, tenant: Tenant, user: User) -> str | None:
    """Why this user's voice note is not transcribed at all, if it is not."""
    if not user.enabled:
        return "The user is not enabled for this tenant."
    if user.opted_out_at is not None:
        return "The user opted out (STOP)."
    if AUDIO_TRANSCRIPTION.name not in identity.entitlement(conn, tenant.id, user.id).features:
        return f"The user's plan does not include {AUDIO_TRANSCRIPTION.name}."
    return None


def _fail(conn: Conn, message: Message, error: str) -> str:
    inbox.record_transcript(conn, message.id, status="failed", error=error)
    log.warning("voice note could not be transcribed; the user is asked to type", error=error)
    return "failed"


def _queue_turn(conn: Conn, settings: Settings, message: Message) -> None:
    """Queue the turn that answers the settled voice note (and what waited behind it)."""
    current = inbox.message_by_id(conn, message.id)
    if current is None or current.processed_at is not None:
        return
    try:
        enqueue_turn(redis_for(settings), settings, current)
        inbox.mark_enqueued(conn, [current.id])
    except RedisError as exc:  # the relay queues it instead, at its next pass
        inbox.requeue_inbound(conn, current.id)
        log.warning("could not queue the turn; the relay will", error=str(exc))


def media_policy(settings: Settings, voice: VoiceSettings) -> MediaPolicy:
    """The download rules from the settings: HTTPS and Twilio's hosts in production."""
    return MediaPolicy(
        allowed_hosts=voice.allowed_hosts(
            settings.twilio_api_base_url, settings.cloud_api_base_url
        ),
        require_https=settings.app_env == "production",
        max_bytes=voice.media_max_bytes,
        max_seconds=voice.media_timeout_seconds,
        max_audio_seconds=voice.media_max_audio_seconds,
        max_redirects=voice.media_max_redirects,
    )


def transcriber(settings: Settings, voice: VoiceSettings) -> Transcriber:
    """The configured transcriber; the offline model is loaded once per process."""
    if voice.transcription_provider == "openai":
        from graphs.settings import LLMSettings

        key = voice.transcription_api_key or LLMSettings().openai_api_key
        return OpenAITranscriber(
            model=voice.transcription_model,
            api_key=key.get_secret_value() if key else None,
            base_url=voice.transcription_base_url,
            timeout=voice.transcription_timeout_seconds,
        )
    folder = str(voice.transcription_model_dir or "")
    return _offline(folder, str(settings.data_dir), voice.transcription_threads)


@lru_cache(maxsize=2)
def _offline(model_dir: str, data_dir: str, threads: int) -> WhisperTranscriber:
    from pathlib import Path

    folder = Path(model_dir) if model_dir else packaged_model_dir(Path(data_dir) / "models")
    return WhisperTranscriber(folder, threads=threads)
