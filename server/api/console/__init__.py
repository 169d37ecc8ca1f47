"""The support console: one HTML page and a small script, served at `/support`.

The page itself needs no sign-in; it asks for a bearer token and calls the support API
(`/api/v1/tenants/{tenant_id}/support/...`) with it, so every rule of that API applies. The files
are static and ship in the wheel beside this module. Every response carries a strict
Content-Security-Policy: scripts, styles and requests come from this origin only, nothing runs
inline, and the page cannot be framed.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter, Response

router = APIRouter(include_in_schema=False)

_HERE = Path(__file__).parent

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "img-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])  # fmt: skip

_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

_FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}


@cache
def _read(name: str) -> bytes:
    return (_HERE / name).read_bytes()


def _serve(name: str) -> Response:
    return Response(_read(name), media_type=_FILES[name], headers=_HEADERS)


@router.get("/support")
def page() -> Response:
    """Serve the console page (it signs in with a token the user pastes or links)."""
    return _serve("index.html")


@router.get("/support/console.js")
def script() -> Response:
    """Serve the console's script."""
    return _serve("console.js")


@router.get("/support/console.css")
def stylesheet() -> Response:
    """Serve the console's stylesheet."""
    return _serve("console.css")
