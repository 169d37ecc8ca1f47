"""How the graph reaches its language model, read from the environment."""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from store.settings import current


class LLMSettings(BaseSettings):
    """The OpenAI-compatible model the graph talks to; see `.env.example`."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_temperature: float = 0.3
    llm_timeout_seconds: float = 60.0
    llm_max_retries: int = 2
    llm_structured_output: Literal["auto", "json_schema", "function_calling"] = "auto"
    """How routing and memory extraction ask for structured output: strict `json_schema`,
    `function_calling` (a forced tool call), or `auto` (json_schema unless the server refuses
    it or the start-up model check finds it missing)."""

    offline_llm_latency: str = "0"
    """How long each call to the offline stand-in takes (`0.5`, `uniform:0.5,1.5`,
    `lognormal:1.0,0.3`; see `graphs.offline.latency`), to try the service with a slow model."""

    @property
    def configured(self) -> bool:
        """Whether a real (or explicitly chosen) OpenAI-compatible model is configured."""
        return self.openai_api_key is not None or self.openai_base_url is not None


def llm_settings() -> LLMSettings:
    """The model's settings as the environment sets them now, read once while it stays the same
    (see `store.settings.current`): every model call of a turn asks for them."""
    return current(LLMSettings)
