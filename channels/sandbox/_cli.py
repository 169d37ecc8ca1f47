"""Command line of :mod:`channels.sandbox.twilio`: its options and running until a signal.

Kept apart from the sandbox itself so ``TwilioSandbox`` reads as the API tests use.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Protocol

logger = logging.getLogger("channels.sandbox.twilio")


class Serving(Protocol):
    """What the command line runs: the sandbox, seen from outside."""

    @property
    def url(self) -> str:
        """Where it listens."""
        ...

    def start(self) -> object:
        """Start serving."""
        ...

    def stop(self) -> None:
        """Stop serving."""
        ...


def _account_arg(value: str) -> tuple[str, str]:
    """Parse a ``SID:TOKEN`` command-line value."""
    sid, sep, token = value.partition(":")
    if not sep or not sid or not token:
        raise argparse.ArgumentTypeError(f"expected SID:TOKEN, got {value!r}")
    return sid, token


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the sandbox's options and set up logging as ``--verbose`` asks."""
    parser = argparse.ArgumentParser(
        prog="python -m channels.sandbox.twilio",
        description="Serve a local fake of Twilio's Messages and typing indicator REST APIs.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=5050, help="port to bind (0 = any free)")
    parser.add_argument(
        "--account",
        action="append",
        type=_account_arg,
        default=[],
        metavar="SID:TOKEN",
        help="accepted credentials (repeatable); without any, all credentials are accepted",
    )
    parser.add_argument(
        "--no-auto-status",
        action="store_true",
        help="don't post 'sent' and 'delivered' to each message's StatusCallback",
    )
    parser.add_argument(
        "--status-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="pause before each automatic status callback (default: 0)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return args


def serve_until_signalled(server: Serving) -> None:
    """Start ``server``, print where it listens, and stop it on SIGINT or SIGTERM."""
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        try:
            print(f"Twilio sandbox listening on {server.url}", flush=True)
            stop.wait()
            logger.info("Twilio sandbox shutting down")
        finally:
            server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
