"""The channel's own decisions: splitting, keywords, Twilio error codes, the shared rate limit."""

from __future__ import annotations

import random

import pytest
from redis import Redis

from channels.base import SendOutcome
from channels.policy import is_opt_in, is_opt_out
from channels.ratelimit import SenderRateLimiter
from channels.splitting import MAX_BODY, split_body
from channels.twilio.errors import classify_error


def test_short_bodies_are_one_part() -> None:
    assert split_body("Oi!") == ["Oi!"]
    assert split_body("x" * MAX_BODY) == ["x" * MAX_BODY]
    assert split_body("   \n ") == []


def test_long_bodies_split_at_paragraphs_first() -> None:
    first, second = "a" * 1000, "b" * 1000
    assert split_body(f"{first}\n\n{second}") == [first, second]


def test_then_at_sentences() -> None:
    one, two = "Um " + "x" * 995 + ".", "Dois " + "y" * 995 + "!"
    assert split_body(f"{one} {two}") == [one, two]


def test_then_at_words_and_cut_words_only_when_one_is_too_long() -> None:
    words = " ".join(["palavra"] * 400)  # 3199 characters, no sentence end
    parts = split_body(words)
    assert all(len(p) <= MAX_BODY for p in parts)
    assert " ".join(parts) == words
    assert all(not p.startswith(" ") and not p.endswith(" ") for p in parts)

    url = "https://example.com/" + "z" * 3500
    assert "".join(split_body(url)) == url
    assert [len(p) for p in split_body(url)] == [1600, 1600, 320]


@pytest.mark.parametrize("seed", range(5))
def test_split_keeps_every_word_in_order_and_within_the_limit(seed: int) -> None:
    rng = random.Random(seed)
    paragraphs = [
        " ".join(
            "".join(rng.choice("abcdeé") for _ in range(rng.randint(1, 30)))
            + rng.choice(["", "", ".", "!", "?"])
            for _ in range(rng.randint(1, 300))
        )
        for _ in range(rng.randint(1, 8))
    ]
    body = "\n\n".join(paragraphs)
    parts = split_body(body)
    assert all(0 < len(p) <= MAX_BODY for p in parts)
    assert " ".join(parts).split() == body.split()


def test_bad_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        split_body("x", limit=0)


@pytest.mark.parametrize("text", ["STOP", "stop", " Parar ", "SAIR!", "cancelar.", "Stop"])
def test_opt_out_keywords_alone(text: str) -> None:
    assert is_opt_out(text) and not is_opt_in(text)


@pytest.mark.parametrize("text", ["please stop", "stop it", "parar de gastar", "STOPS", ""])
def test_opt_out_words_inside_a_sentence_do_not_count(text: str) -> None:
    assert not is_opt_out(text)


@pytest.mark.parametrize("text", ["START", "voltar", " Voltar! "])
def test_opt_in_keywords(text: str) -> None:
    assert is_opt_in(text) and not is_opt_out(text)


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (None, None, SendOutcome.RETRY),  # network error
        (500, 20500, SendOutcome.RETRY),
        (503, None, SendOutcome.RETRY),
        (429, 20429, SendOutcome.RETRY),
        (400, 63018, SendOutcome.RETRY),
        (400, 63016, SendOutcome.TEMPLATE),
        (400, 21610, SendOutcome.OPTED_OUT),
        (400, 21211, SendOutcome.FAIL),
        (400, 21614, SendOutcome.FAIL),
        (400, 63003, SendOutcome.FAIL),
        (400, 12345, SendOutcome.FAIL),
        (401, 20003, SendOutcome.FAIL),
    ],
)
def test_twilio_error_codes(status: int | None, code: int | None, outcome: SendOutcome) -> None:
    assert classify_error(status, code) is outcome


def test_rate_limit_is_shared_through_redis(redis: Redis) -> None:
    first = SenderRateLimiter(redis, 3)
    second = SenderRateLimiter(redis, 3)  # another worker
    now = 1_000_000.25
    waits = [limiter.try_acquire("whatsapp:+1", now) for limiter in (first, second) * 3]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == [0.75, 0.75, 0.75]
    assert first.try_acquire("whatsapp:+2", now) == 0.0, "each sender has its own budget"
    assert first.try_acquire("whatsapp:+1", now + 1) == 0.0, "the next second starts afresh"


def test_rate_limit_refuses_nonsense(redis: Redis) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SenderRateLimiter(redis, 0)
