"""Download a media file the provider hosts for a message, treating its URL as an attacker's input.

The URL comes from a webhook form, so every hop is checked before a byte is sent: the scheme
(HTTPS when the policy requires it), the host (on the allow-list), and the address the host
resolves to, at connect time, so a DNS answer cannot change between check and use (no private,
loopback, link-local or reserved address unless the allow-list names that host itself).
Redirects are followed by hand, only to allowed hosts and at most `max_redirects` times. The
channel's credentials go only to the URL's own origin, never across a redirect. The size
cap holds while streaming, a deadline bounds the whole download (a slow, endless stream), the
declared content type must match the file's first bytes, and the audio's duration is capped.
The temporary file is removed however the download or its use ends.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

RefusalReason = Literal[
    "bad_url", "https_required", "host_not_allowed", "private_address", "too_many_redirects",
    "http_error", "too_large", "too_slow", "too_long", "unsupported_type", "type_mismatch",
    "unreadable",
]  # fmt: skip

Resolver = Callable[[str, int], list[str]]

TEMP_PREFIX = "conversa-media-"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

# The first bytes of each audio format we accept, by declared content type (without parameters).
_OGG = (b"OggS",)
_MP3 = (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"\xff\xe3")
_AAC = (b"\xff\xf1", b"\xff\xf9", b"ADIF")
_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "audio/ogg": _OGG,
    "audio/opus": _OGG,
    "application/ogg": _OGG,
    "audio/mpeg": _MP3,
    "audio/mp3": _MP3,
    "audio/aac": _AAC,
    "audio/amr": (b"#!AMR",),
    "audio/wav": (b"RIFF",),
    "audio/x-wav": (b"RIFF",),
    "audio/wave": (b"RIFF",),
    "audio/webm": (b"\x1a\x45\xdf\xa3",),
    "audio/flac": (b"fLaC",),
}
_MP4 = frozenset({"audio/mp4", "audio/m4a", "audio/x-m4a", "audio/aac"})  # ISO base media
_SUFFIXES = {"ogg": ".ogg", "opus": ".ogg", "mpeg": ".mp3", "mp3": ".mp3", "amr": ".amr",
             "wav": ".wav", "x-wav": ".wav", "wave": ".wav", "webm": ".webm", "flac": ".flac",
             "mp4": ".m4a", "m4a": ".m4a", "x-m4a": ".m4a", "aac": ".aac"}  # fmt: skip


class MediaRefused(Exception):
    """The media was not downloaded, or not kept, for a reason retrying will not change."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RefusalReason = reason
        self.detail = detail


class MediaUnavailable(Exception):
    """The media host could not be reached or answered with a temporary error; retry later."""


def base_type(content_type: str) -> str:
    """The media type without parameters, lowercased: 'audio/ogg; codecs=opus' -> 'audio/ogg'."""
    return content_type.split(";", 1)[0].strip().lower()


def is_audio(content_type: str) -> bool:
    """Whether a declared content type is audio (a voice note, for WhatsApp)."""
    return base_type(content_type).startswith("audio/")


def matches_type(content_type: str, head: bytes) -> bool:
    """Whether a file starting with `head` is what `content_type` declares."""
    kind = base_type(content_type)
    if kind in _MP4 and head[4:8] == b"ftyp":
        return True
    signatures = _SIGNATURES.get(kind, ())
    if kind in ("audio/wav", "audio/x-wav", "audio/wave"):
        return head[:4] == b"RIFF" and head[8:12] == b"WAVE"
    return any(head.startswith(s) for s in signatures)


def supported_type(content_type: str) -> bool:
    """Whether we can check and decode files declared as `content_type`."""
    kind = base_type(content_type)
    return kind in _SIGNATURES or kind in _MP4


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise MediaUnavailable(f"cannot resolve {host}: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class MediaPolicy:
    """Where media may come from and how much of it we take.

    `allowed_hosts` holds `host`, `host:port` or `*.domain` entries. A host named by itself
    (not through a wildcard) may resolve to a private or loopback address: that is how the
    local sandbox is allowed in tests and the demo.
    """

    allowed_hosts: frozenset[str]
    require_https: bool = True
    max_bytes: int = 16 * 1024 * 1024
    max_seconds: float = 30.0
    max_audio_seconds: float = 180.0
    max_redirects: int = 3
    temp_dir: Path | None = None
    resolve: Resolver = field(default=_resolve, repr=False)

    def _entries(self, host: str, port: int) -> tuple[str, str]:
        host = host.lower().strip("[]")
        return host, f"{host}:{port}"

    def names(self, host: str, port: int) -> bool:
        """Whether the allow-list names this host itself (with or without the port)."""
        bare, with_port = self._entries(host, port)
        return bare in self.allowed_hosts or with_port in self.allowed_hosts

    def allows(self, host: str, port: int) -> bool:
        """Whether the allow-list names this host or covers it with a `*.domain` wildcard."""
        if self.names(host, port):
            return True
        bare, _ = self._entries(host, port)
        return any(
            entry.startswith("*.") and bare.endswith(entry[1:]) for entry in self.allowed_hosts
        )

    def check_url(self, url: str) -> httpx.URL:
        """Parse `url` and refuse it unless its scheme and host are allowed."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise MediaRefused("bad_url", f"not a URL: {url[:200]!r}") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise MediaRefused("bad_url", f"not an http(s) URL: {url[:200]!r}")
        if parsed.userinfo:
            raise MediaRefused("bad_url", "URLs with credentials in them are not accepted")
        if self.require_https and parsed.scheme != "https":
            raise MediaRefused("https_required", f"{parsed.host} over plain http")
        if not self.allows(parsed.host, _port(parsed)):
            raise MediaRefused("host_not_allowed", f"{parsed.host} is not on MEDIA_ALLOWED_HOSTS")
        return parsed


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


class _GuardedBackend(httpcore.SyncBackend):
    """Connect only to addresses the policy allows, checked on the address actually used."""

    def __init__(self, policy: MediaPolicy) -> None:
        self._policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self._policy.resolve(host, port)
        if not self._policy.names(host, port):
            private = [a for a in addresses if not _public(a)]
            if private or not addresses:
                raise MediaRefused(
                    "private_address", f"{host} resolves to a non-public address {private[:1]}"
                )
        last: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        raise last or httpcore.ConnectError(f"no address for {host}")


@lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context(trust_env=False)  # loading the CA bundle costs ~10 ms


class _GuardedTransport(httpx.HTTPTransport):
    def __init__(self, policy: MediaPolicy) -> None:
        super().__init__(trust_env=False, retries=0, verify=_ssl_context())
        # httpx builds its pool without a way to pass a network backend: swap in one that does.
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(),
            max_connections=2,
            network_backend=_GuardedBackend(policy),
        )


@dataclass(frozen=True)
class DownloadedMedia:
    """A media file on disk, checked; it is deleted when the `download_media` block ends."""

    path: Path
    content_type: str
    size: int
    seconds: float | None


@contextlib.contextmanager
def download_media(
    url: str,
    content_type: str,
    *,
    policy: MediaPolicy,
    auth: httpx.Auth | None = None,
) -> Iterator[DownloadedMedia]:
    """Download and check the audio at `url`, declared as `content_type`; yield it on disk.

    Raises `MediaRefused` (with a reason) for anything the policy or the file itself rules
    out, and `MediaUnavailable` when the host could not be reached or failed for now.
    """
    if not is_audio(content_type) or not supported_type(content_type):
        raise MediaRefused("unsupported_type", f"{base_type(content_type) or 'no type'}")
    suffix = _SUFFIXES.get(base_type(content_type).split("/", 1)[1], ".bin")
    handle, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=policy.temp_dir)
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            size = _fetch(url, content_type, policy, auth, out)
        seconds = probe_seconds(path, policy.max_audio_seconds)
        yield DownloadedMedia(path=path, content_type=content_type, size=size, seconds=seconds)
    finally:
        path.unlink(missing_ok=True)


def _fetch(
    url: str,
    content_type: str,
    policy: MediaPolicy,
    auth: httpx.Auth | None,
    out: Any,
) -> int:
    deadline = time.monotonic() + policy.max_seconds
    current = policy.check_url(url)
    origin = (current.scheme, current.host, _port(current))
    timeout = httpx.Timeout(min(policy.max_seconds, 10.0), read=policy.max_seconds)
    with httpx.Client(
        transport=_GuardedTransport(policy),
        follow_redirects=False,
        timeout=timeout,
        trust_env=False,
        headers={"Accept": "*/*", "User-Agent": "conversa-media/1"},
    ) as client:
        for hop in range(policy.max_redirects + 1):
            same_origin = (current.scheme, current.host, _port(current)) == origin
            try:
                with client.stream("GET", current, auth=auth if same_origin else None) as response:
                    if response.status_code in _REDIRECTS:
                        location = response.headers.get("location")
                        if not location:
                            raise MediaRefused("http_error", "a redirect without a Location")
                        if hop == policy.max_redirects:
                            raise MediaRefused(
                                "too_many_redirects", f"more than {policy.max_redirects}"
                            )
                        current = policy.check_url(urljoin(str(current), location))
                        continue
                    _check_status(response)
                    return _save(response, content_type, policy, deadline, out)
            except httpx.TimeoutException as exc:
                if time.monotonic() >= deadline - 0.05:
                    raise MediaRefused("too_slow", f"not done in {policy.max_seconds:g} s") from exc
                raise MediaUnavailable(f"timed out: {exc!r}") from exc
            except httpx.TransportError as exc:
                raise MediaUnavailable(f"{type(exc).__name__}: {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _check_status(response: httpx.Response) -> None:
    status = response.status_code
    if status == 200:
        return
    if status == 429 or status >= 500:
        raise MediaUnavailable(f"{urlsplit(str(response.url)).hostname} answered {status}")
    raise MediaRefused("http_error", f"{urlsplit(str(response.url)).hostname} answered {status}")


def _save(
    response: httpx.Response, content_type: str, policy: MediaPolicy, deadline: float, out: Any
) -> int:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise MediaRefused("too_large", f"{declared} bytes, over {policy.max_bytes}")
    size, head, checked = 0, b"", False
    for chunk in response.iter_raw():  # as it arrives: a chunk size would wait to fill it
        size += len(chunk)
        if size > policy.max_bytes:
            raise MediaRefused("too_large", f"over {policy.max_bytes} bytes")
        if time.monotonic() > deadline:
            raise MediaRefused("too_slow", f"not done in {policy.max_seconds:g} s")
        if not checked:
            head += chunk[: 16 - len(head)]
            if len(head) >= 12:
                _check_type(content_type, head)
                checked = True
        out.write(chunk)
    if not checked:
        _check_type(content_type, head)
    return size


def _check_type(content_type: str, head: bytes) -> None:
    if not matches_type(content_type, head):
        raise MediaRefused(
            "type_mismatch", f"declared {base_type(content_type)}, starts with {head[:8]!r}"
        )


def probe_seconds(path: Path, limit: float) -> float:
    """Return the audio's duration in seconds; refuse an unreadable file or one over `limit`."""
    import av  # PyAV comes with faster-whisper; imported here, only where audio is handled

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise MediaRefused("unreadable", "no audio stream")
            seconds = container.duration / av.time_base if container.duration else None
            if seconds is None:  # no duration in the header: add up the packets, up to the cap
                stream = container.streams.audio[0]
                total = 0.0
                for packet in container.demux(stream):
                    if packet.duration and stream.time_base:
                        total += float(packet.duration * stream.time_base)
                    if total > limit:
                        break
                seconds = total
    except MediaRefused:
        raise
    except Exception as exc:  # PyAV raises its own error types per FFmpeg error
        raise MediaRefused("unreadable", f"cannot read the audio: {exc}") from exc
    if seconds > limit:
        raise MediaRefused("too_long", f"{seconds:.0f} s of audio, over {limit:g} s")
    return round(float(seconds), 2)
