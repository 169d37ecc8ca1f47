"""Twilio REST routes of :mod:`channels.sandbox.twilio`: what the ``twilio`` client calls.

Messages (create, list, fetch), WhatsApp typing indicators, inbound media URLs and the Content
API, each authenticated as Twilio does (HTTP Basic with the account's SID and auth token) and
each able to fail with an error a test injected.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from channels.sandbox._content import ContentStore
from channels.sandbox._media import MEDIA_PATH, MediaStore
from channels.sandbox._messages import list_page, new_message, resource, typing_fields
from channels.sandbox._store import Records
from channels.sandbox._wire import API_VERSION, ApiError, RawReply, Reply, first, parse_form

# Share the public module's logger so one logging setting covers the whole sandbox.
logger = logging.getLogger("channels.sandbox.twilio")

_MESSAGES_PATH = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/Messages\.json$")
_MESSAGE_PATH = re.compile(
    rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/Messages/(?P<sid>[^/]+)\.json$"
)
_TYPING_PATH = "/v2/Indicators/Typing.json"

FollowUp = Callable[[dict[str, Any]], Callable[[], None] | None]
"""Given a created message, what to run once the client has its resource (if anything)."""


class TwilioApi:
    """Answers Twilio REST API requests from the sandbox's stores."""

    def __init__(
        self, records: Records, media: MediaStore, contents: ContentStore, follow_up: FollowUp
    ) -> None:
        """Serve ``records``, ``media`` and ``contents``; run ``follow_up`` after each create."""
        self._records = records
        self._media = media
        self._contents = contents
        self._follow_up = follow_up

    def answer(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        authorization: str | None,
        body: bytes,
    ) -> Reply | RawReply:
        """Answer one Twilio REST API request, or raise the :class:`ApiError` Twilio would."""
        authenticate = self._records.authenticate
        if match := MEDIA_PATH.match(path):
            if method != "GET":
                raise ApiError(20004, 405)
            account = match["account"]
            return self._media.serve(
                account, match["sid"], lambda: authenticate(authorization, account)
            )
        if path.startswith("/v1/Content"):
            account, _ = authenticate(authorization, None)
            return self._contents.dispatch(method, path, account, body, query)
        if path == _TYPING_PATH:
            account, _ = authenticate(authorization, None)
            if method == "POST":
                return Reply(200, self._create_typing(account, parse_form(body)))
            raise ApiError(20004, 405)
        if match := _MESSAGES_PATH.match(path):
            account = match["account"]
            _, token = authenticate(authorization, account)
            if method == "POST":
                return self._create_message(account, token, parse_form(body))
            if method == "GET":
                return Reply(200, list_page(self._records.resources(account), account, query))
            raise ApiError(20004, 405)
        if match := _MESSAGE_PATH.match(path):
            account = match["account"]
            authenticate(authorization, account)
            if method == "GET":
                return Reply(200, self._fetch_message(account, match["sid"], path))
            raise ApiError(20004, 405)
        raise ApiError(20404, 404, f"The requested resource {path} was not found")

    def _create_message(self, account_sid: str, token: str, form: dict[str, list[str]]) -> Reply:
        """Validate a create request, store the message and reply with its resource."""
        self._records.take_error("messages", first(form, "To"))
        message = new_message(account_sid, form)
        if message["content_sid"]:
            message["body"], message["choices"] = self._contents.render_message(
                account_sid, message["content_sid"], message["content_variables"]
            )
        self._records.add("messages", message, token)
        logger.debug("Twilio sandbox stored %s to %s", message["sid"], message["to"])
        return Reply(201, resource(message), self._follow_up(message))

    def _create_typing(self, account_sid: str, form: dict[str, list[str]]) -> dict[str, Any]:
        """Validate and record a WhatsApp typing indicator."""
        self._records.take_error("typing")
        message_id, channel = typing_fields(form)
        indicator = {
            "account_sid": account_sid,
            "message_id": message_id,
            "channel": channel,
            "at": time.time(),
        }
        self._records.add("typing", indicator)
        logger.debug("Twilio sandbox stored typing indicator for %s", message_id)
        return {"success": True}

    def _fetch_message(self, account_sid: str, sid: str, path: str) -> dict[str, Any]:
        """Return one message resource or raise a 404."""
        found = self._records.find_resource(account_sid, sid)
        if found is None:
            raise ApiError(20404, 404, f"The requested resource {path} was not found")
        return found
