"""Settings of the service, read from the environment (and `.env`) by pydantic-settings."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from store.settings import DatabaseSettings

QUEUE_PROCESS = "process_ai_response"
QUEUE_SEND = "send_whatsapp_message"
QUEUE_TRANSCRIBE = "transcribe_audio"
QUEUES = (QUEUE_SEND, QUEUE_TRANSCRIBE, QUEUE_PROCESS)
"""Every queue the workers listen on, in priority order: replies first."""


DEFAULT_MODEL_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "offline": (0.0, 0.0),
}
"""USD per million input and output tokens, as OpenAI lists them; `MODEL_PRICES` replaces it."""


class Settings(DatabaseSettings):
    """Configuration of the API, the workers and the local tools; see `.env.example`."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    app_env: Literal["development", "production", "test"] = "development"
    log_level: str = "INFO"

    data_dir: Path = Path(".data")
    db_pool_max_size: int = Field(default=10, ge=1)
    db_pool_timeout: float = Field(default=5.0, gt=0)
    redis_url: str | None = None

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_workers: int = Field(default=1, ge=1)
    api_access_log: bool = False
    api_shutdown_timeout_seconds: int = Field(default=10, ge=1)
    tenant_cache_seconds: float = Field(default=30.0, ge=0)
    profile_cache_seconds: float = Field(default=60.0, ge=0)
    public_base_url: str = "http://127.0.0.1:8000"

    twilio_api_base_url: str | None = None

    twilio_status_callbacks: bool = True

    cloud_api_base_url: str | None = None
    """Meta's Graph API somewhere else (the local Cloud API sandbox); None: graph.facebook.com."""
    cloud_verify_token: SecretStr | None = None
    """What Meta's webhook subscription check (`hub.verify_token`) must send; unset: refused."""

    job_timeout: int = Field(default=180, ge=10)
    job_retries: int = Field(default=2, ge=0)
    relay_interval_seconds: float = Field(default=1.0, gt=0)
    outbox_min_age_seconds: float = Field(default=10.0, ge=0)
    stale_job_seconds: float = Field(default=300.0, gt=0)
    worker_concurrency: int = Field(default=8, ge=1, le=256)
    """Turns one worker process runs at once, each in its own thread."""
    worker_heartbeat_seconds: float = Field(default=2.0, gt=0, le=60)
    worker_dead_after_seconds: float = Field(default=10.0, gt=0, le=600)
    """A worker process silent this long is dead: a live worker queues its jobs again at once."""

    llm_check_at_start: bool = True
    """`serve` and `worker` check what the chat model can do and log it (`conversa check`)."""

    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)

    inbound_debounce_seconds: float = Field(default=1.5, ge=0, le=10)
    inbound_debounce_max_seconds: float = Field(default=5.0, ge=0, le=60)
    turn_supersede_max_seconds: float = Field(default=60.0, ge=0, le=3600)
    """A reply overtaken by newer messages is dropped and the turn folded into the next, unless
    the user has already waited this long for an answer (0: never fold)."""

    send_rate_per_second: int = Field(default=10, ge=1)
    send_max_attempts: int = Field(default=5, ge=1)
    send_backoff_seconds: float = Field(default=2.0, ge=0)
    send_backoff_max_seconds: float = Field(default=120.0, ge=0)

    typing_after_seconds: float = Field(default=3.0, ge=0)
    typing_refresh_seconds: float = Field(default=20.0, gt=0)

    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_private_key: SecretStr | None = None
    jwt_issuer: str = "conversa"
    jwt_audience: str = "conversa-api"
    jwt_ttl_seconds: int = Field(default=3600, ge=60)

    retention_interval_seconds: float = Field(default=3600.0, ge=0)
    retention_batch: int = Field(default=500, ge=1)

    date_notice_interval_seconds: float = Field(default=900.0, ge=0)
    """How often the API queues the date-notice sweep (0: no date notices are sent)."""
    date_notice_days_before: int = Field(default=1, ge=0, le=30)
    """How many days before a saved date its notice goes out (0: on the day)."""
    date_notice_hour: int = Field(default=9, ge=0, le=23)
    """From which local hour (the user's time zone, else the tenant's) notices go out."""

    model_prices: str = ""
    """JSON: model name -> [input, output] price per million tokens, over the built-in table;
    the key "*" prices every model not named (else an unknown model costs nothing)."""
    transcription_price_per_minute: float = Field(default=0.006, ge=0)
    send_price_per_message: float = Field(default=0.0, ge=0)
    budget_completion_tokens: int = Field(default=400, ge=1, le=1_000_000)
    """What a model call's answer is assumed to take when the call sets no `max_tokens`."""
    budget_hold_seconds: float = Field(default=600.0, gt=0, le=86400)
    """A model call's hold stops counting after this long (its worker died before settling)."""
    budget_alert_allow_private: bool = False
    """Let budget alert webhooks reach private and loopback addresses (tests, local demos)."""

    @model_validator(mode="after")
    def _heartbeat_fits(self) -> Settings:
        if self.worker_dead_after_seconds <= 2 * self.worker_heartbeat_seconds:
            raise ValueError(
                "WORKER_DEAD_AFTER_SECONDS must be more than twice WORKER_HEARTBEAT_SECONDS "
                "(one late heartbeat must not declare a live worker dead)"
            )
        return self

    @field_validator("model_prices")
    @classmethod
    def _price_table(cls, value: str) -> str:
        _parse_prices(value)
        return value

    def price_of(self, model: str) -> tuple[float, float]:
        """The (input, output) price per million tokens of `model`."""
        table = {**DEFAULT_MODEL_PRICES, **_parse_prices(self.model_prices)}
        return table.get(model) or table.get("*") or (0.0, 0.0)

    def public_url(self, path: str) -> str:
        """Return the URL a provider uses to reach `path` on this service."""
        return self.public_base_url.rstrip("/") + path


@lru_cache(maxsize=8)
def _parse_prices(value: str) -> dict[str, tuple[float, float]]:
    """Read `MODEL_PRICES`: a JSON object of [input, output] prices, both >= 0."""
    if not value.strip():
        return {}
    try:
        table = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"MODEL_PRICES is not JSON: {exc}") from exc
    if not isinstance(table, dict):
        raise ValueError('MODEL_PRICES must be a JSON object: {"model": [input, output]}')
    prices: dict[str, tuple[float, float]] = {}
    for model, pair in table.items():
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(p, int | float) and not isinstance(p, bool) for p in pair)
            or not all(0 <= p < 1e6 for p in pair)
        ):
            raise ValueError(
                f"MODEL_PRICES[{model!r}] must be [input, output] prices per million tokens, "
                "each a number from 0 to 1,000,000"
            )
        prices[str(model)] = (float(pair[0]), float(pair[1]))
    return prices


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings, read once."""
    return Settings()


TWILIO_MEDIA_HOSTS = ("api.twilio.com", "mms.twiliocdn.com", "media.twiliocdn.com",
                      "s3-external-1.amazonaws.com")  # fmt: skip
"""Where Twilio serves inbound media: the API, then a redirect to its CDN (or S3, for accounts
that do not enforce HTTP auth on media)."""
CLOUD_MEDIA_HOSTS = ("graph.facebook.com", "lookaside.fbsbx.com")
"""Where Meta's Cloud API serves inbound media: the Graph API names the URL, its CDN serves it."""


class VoiceSettings(BaseSettings):
    """Voice notes: the media download's limits and the transcriber; see `.env.example`."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    media_allowed_hosts: str = ""
    media_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    media_max_audio_seconds: float = Field(default=180.0, gt=0)
    media_timeout_seconds: float = Field(default=30.0, gt=0)
    media_max_redirects: int = Field(default=3, ge=0, le=10)

    transcription_provider: Literal["offline", "openai"] = "offline"
    transcription_model: str = "whisper-1"
    transcription_base_url: str | None = None
    transcription_api_key: SecretStr | None = None
    transcription_timeout_seconds: float = Field(default=120.0, gt=0)
    transcription_model_dir: Path | None = None
    transcription_threads: int = Field(default=0, ge=0)

    def allowed_hosts(self, *sandboxes: str | None) -> frozenset[str]:
        """The media hosts: MEDIA_ALLOWED_HOSTS (else Twilio's and Meta's), plus the local
        sandboxes' (TWILIO_API_BASE_URL, CLOUD_API_BASE_URL) when set."""
        hosts = {h.strip().lower() for h in self.media_allowed_hosts.split(",") if h.strip()}
        if not hosts:
            hosts = {*TWILIO_MEDIA_HOSTS, *CLOUD_MEDIA_HOSTS}
        for base_url in sandboxes:
            netloc = urlsplit(base_url).netloc.rsplit("@", 1)[-1].lower() if base_url else ""
            if netloc:
                hosts.add(netloc)
        return frozenset(hosts)
