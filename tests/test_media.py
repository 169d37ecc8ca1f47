"""The media download treats the URL as an attacker's input: allow-list, HTTPS, redirects,
private addresses, credentials, size, time and duration caps, content types, temp files.

The files are served by the Twilio sandbox behind HTTP Basic auth, as Twilio serves them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from channels.media import (
    TEMP_PREFIX,
    MediaPolicy,
    MediaRefused,
    download_media,
    matches_type,
)
from channels.sandbox.twilio import TwilioSandbox
from server.settings import CLOUD_MEDIA_HOSTS, TWILIO_MEDIA_HOSTS, VoiceSettings
from tests.speech import SpeakFn, make_tone

SENTENCE = ("gastei cinquenta reais no mercado", "pt-br")


@pytest.fixture
def account(sandbox: TwilioSandbox) -> tuple[str, str]:
    """A Twilio account the sandbox knows: (SID, auth token)."""
    credentials = ("AC" + secrets.token_hex(16), secrets.token_hex(16))
    sandbox.add_account(*credentials)
    return credentials


@pytest.fixture
def temp_dir(tmp_path: Path) -> Iterator[Path]:
    """The download's temporary folder; every test ends with it empty."""
    folder = tmp_path / "media-tmp"
    folder.mkdir()
    yield folder
    assert list(folder.iterdir()) == [], "a temporary file was left behind"


@pytest.fixture
def policy(sandbox: TwilioSandbox, temp_dir: Path) -> MediaPolicy:
    """The sandbox allowed (as the settings allow TWILIO_API_BASE_URL), plain http allowed."""
    return MediaPolicy(
        allowed_hosts=frozenset({urlsplit(sandbox.url).netloc}),
        require_https=False,
        max_seconds=2.0,
        temp_dir=temp_dir,
    )


def _refused(url: str, content_type: str, policy: MediaPolicy, account: tuple[str, str]) -> str:
    with (
        pytest.raises(MediaRefused) as caught,
        download_media(url, content_type, policy=policy, auth=httpx.BasicAuth(*account)),
    ):
        pytest.fail("the download should have been refused")
    return caught.value.reason


def test_a_voice_note_downloads_with_the_accounts_credentials(
    sandbox: TwilioSandbox, policy: MediaPolicy, account: tuple[str, str], speak: SpeakFn
) -> None:
    clip = speak(*SENTENCE)
    url = sandbox.add_media(clip, "audio/ogg", account_sid=account[0])

    auth = httpx.BasicAuth(*account)
    with download_media(url, "audio/ogg; codecs=opus", policy=policy, auth=auth) as m:
        assert m.path.read_bytes() == clip and m.size == len(clip)
        assert m.path.name.startswith(TEMP_PREFIX) and m.path.parent == policy.temp_dir
        assert m.seconds is not None and 1.0 < m.seconds < 6.0

    assert sandbox.media_fetches[-1]["authorized"] is True
    wrong = (account[0], "not-the-token")
    assert _refused(url, "audio/ogg", policy, wrong) == "http_error"


def test_a_host_off_the_allow_list_is_never_contacted(
    policy: MediaPolicy, account: tuple[str, str]
) -> None:
    for url in (
        "https://evil.example.com/voice.ogg",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:6379/",
        "file:///etc/passwd",
        "not a url",
    ):
        assert _refused(url, "audio/ogg", policy, account) in ("host_not_allowed", "bad_url")


def test_https_is_required_in_production(
    sandbox: TwilioSandbox, policy: MediaPolicy, account: tuple[str, str], speak: SpeakFn
) -> None:
    url = sandbox.add_media(speak(*SENTENCE), "audio/ogg", account_sid=account[0])
    strict = replace(policy, require_https=True)
    assert _refused(url, "audio/ogg", strict, account) == "https_required"


def test_a_redirect_to_a_private_address_is_refused(
    sandbox: TwilioSandbox, policy: MediaPolicy, account: tuple[str, str]
) -> None:
    port = urlsplit(sandbox.url).port
    # A CDN wildcard is allowed, but this name resolves to loopback (as DNS rebinding would).
    cdn = replace(
        policy,
        allowed_hosts=policy.allowed_hosts | {"*.media.test"},
        resolve=lambda host, port: ["127.0.0.1"] if host.endswith(".media.test") else [host],
    )
    to_private = sandbox.add_media_redirect(
        f"http://cdn.media.test:{port}/x.ogg", account_sid=account[0]
    )
    assert _refused(to_private, "audio/ogg", cdn, account) == "private_address"
    to_metadata = sandbox.add_media_redirect(
        "http://169.254.169.254/latest/meta-data/", account_sid=account[0]
    )
    assert _refused(to_metadata, "audio/ogg", policy, account) == "host_not_allowed"


def test_redirects_are_capped_and_credentials_never_follow_them(
    sandbox: TwilioSandbox, policy: MediaPolicy, account: tuple[str, str], speak: SpeakFn
) -> None:
    target = sandbox.add_media(speak(*SENTENCE), "audio/ogg", account_sid=account[0])
    hop = target
    for _ in range(policy.max_redirects + 1):
        hop = sandbox.add_media_redirect(hop, account_sid=account[0])
    assert _refused(hop, "audio/ogg", policy, account) == "too_many_redirects"

    # Same host, other origin (localhost, named in the allow-list): no credentials go there.
    port = urlsplit(sandbox.url).port
    elsewhere = target.replace(f"127.0.0.1:{port}", f"localhost:{port}")
    other_origin = replace(policy, allowed_hosts=policy.allowed_hosts | {f"localhost:{port}"})
    redirect = sandbox.add_media_redirect(elsewhere, account_sid=account[0])
    before = len(sandbox.media_fetches)
    assert _refused(redirect, "audio/ogg", other_origin, account) == "http_error"
    assert [f["authorized"] for f in sandbox.media_fetches[before:]] == [True, False]


def test_a_file_over_the_cap_is_refused_while_streaming(
    sandbox: TwilioSandbox, policy: MediaPolicy, account: tuple[str, str], speak: SpeakFn
) -> None:
    small = replace(policy, max_bytes=64 * 1024)
    big = speak(*SENTENCE) + bytes(128 * 1024)
    declared = sandbox.add_media(big, "audio/ogg", account_sid=account[0])
    assert _refused(declared, "audio/ogg", small, account) == "too_large"
    # No Content-Length: the count while streaming stops it.
    endless = sandbox.add_slow_media(
        "audio/ogg", account_sid=account[0], chunk=b"OggS" + bytes(16 * 1024), pause=0.0
    )
    assert _refused(endless, "audio/ogg", small, account) == "too_large"


def test_a_content_type_that_lies_is_refused(
    sandbox: TwilioSandbox, policy: MediaPolicy, account: tuple[str, str], speak: SpeakFn
) -> None:
    html = sandbox.add_media(b"<html><body>not audio</body></html>", "audio/ogg",
                             account_sid=account[0])  # fmt: skip
    assert _refused(html, "audio/ogg", policy, account) == "type_mismatch"
    ogg = sandbox.add_media(speak(*SENTENCE), "audio/mpeg", account_sid=account[0])
    assert _refused(ogg, "audio/mpeg", policy, account) == "type_mismatch"
    assert _refused(ogg, "image/png", policy, account) == "unsupported_type"
    assert _refused(ogg, "audio/x-unknown", policy, account) == "unsupported_type"


def test_a_slow_endless_stream_hits_the_time_cap(
    sandbox: TwilioSandbox, policy: MediaPolicy, account: tuple[str, str]
) -> None:
    url = sandbox.add_slow_media("audio/ogg", account_sid=account[0], pause=0.05)
    assert _refused(url, "audio/ogg", replace(policy, max_seconds=1.0), account) == "too_slow"


def test_audio_over_the_duration_cap_is_refused(
    sandbox: TwilioSandbox, policy: MediaPolicy, account: tuple[str, str], clips: Path
) -> None:
    tone = make_tone(clips, 4.0).read_bytes()
    url = sandbox.add_media(tone, "audio/ogg", account_sid=account[0])
    assert _refused(url, "audio/ogg", replace(policy, max_audio_seconds=2.0), account) == "too_long"
    broken = sandbox.add_media(b"OggS" + bytes(200), "audio/ogg", account_sid=account[0])
    assert _refused(broken, "audio/ogg", policy, account) == "unreadable"


def test_magic_bytes_of_the_formats_whatsapp_sends() -> None:
    assert matches_type("audio/ogg; codecs=opus", b"OggS\x00\x02" + bytes(10))
    assert matches_type("audio/mpeg", b"ID3\x04" + bytes(12))
    assert matches_type("audio/mp4", b"\x00\x00\x00\x20ftypM4A " + bytes(4))
    assert matches_type("audio/amr", b"#!AMR\n" + bytes(10))
    assert matches_type("audio/wav", b"RIFF\x00\x00\x00\x00WAVEfmt ")
    assert not matches_type("audio/wav", b"RIFF\x00\x00\x00\x00AVI LIST")
    assert not matches_type("audio/ogg", b"\x89PNG\r\n\x1a\n" + bytes(8))


def test_the_allow_list_defaults_to_twilio_and_meta_and_adds_the_sandboxes() -> None:
    hosts = VoiceSettings(media_allowed_hosts="").allowed_hosts("http://127.0.0.1:5050", None)
    assert hosts == frozenset({*TWILIO_MEDIA_HOSTS, *CLOUD_MEDIA_HOSTS, "127.0.0.1:5050"})
    both = VoiceSettings(media_allowed_hosts="x.example").allowed_hosts(
        "http://127.0.0.1:5050", "http://127.0.0.1:6060/v21.0"
    )
    assert both == frozenset({"x.example", "127.0.0.1:5050", "127.0.0.1:6060"})
    own = VoiceSettings(media_allowed_hosts="cdn.example.com, *.Media.Example").allowed_hosts(None)
    assert own == frozenset({"cdn.example.com", "*.media.example"})
    policy = MediaPolicy(allowed_hosts=own)
    assert policy.allows("a.media.example", 443) and not policy.names("a.media.example", 443)
    assert policy.names("cdn.example.com", 443) and not policy.allows("media.example.org", 443)
