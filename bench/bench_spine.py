"""Benchmark the spine: webhook acknowledgement and one answered turn, as ratios to baselines.

Each measurement is printed with a baseline measured in the same run, on the same servers:
- webhook ack (signature check, one-statement store) vs `GET /readyz` (one select, one Redis ping);
- a full `process_ai_response` job (lock, load, graph on the Postgres checkpointer, outbox,
  enqueue) vs the same graph invoked with an in-memory checkpointer.
Absolute times on shared machines are noise; the ratios are what to compare between commits.

Run: `make bench` (or `.venv/bin/python bench/bench_spine.py [--messages N] [--turns N]`).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from redis import Redis  # noqa: E402

from bench._common import fresh_database, report, timed  # noqa: E402
from channels.sandbox.twilio import TwilioSandbox  # noqa: E402
from channels.twilio.inbound import sign  # noqa: E402
from graphs.assistant import build_graph  # noqa: E402
from graphs.context import Context  # noqa: E402
from graphs.offline.model import serve  # noqa: E402
from server.cli.chat import whatsapp_form  # noqa: E402
from server.settings import get_settings  # noqa: E402
from store import tenants  # noqa: E402
from store.embedded import start_redis  # noqa: E402


def main() -> int:
    """Set up embedded servers, run both measurements, print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--turns", type=int, default=30)
    args = parser.parse_args()

    data = ROOT / ".data" / "bench"
    database_url = fresh_database("conversa_bench")
    redis_server = start_redis(data / "redis", persist=False)
    sandbox = TwilioSandbox().start()
    model = serve()
    account, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
    sandbox.add_account(account, token)
    os.environ.update(
        DATABASE_URL=database_url, REDIS_URL=redis_server.url, APP_ENV="test",
        LOG_LEVEL="WARNING", PUBLIC_BASE_URL="https://bench.example.com",
        TWILIO_API_BASE_URL=sandbox.url, OPENAI_BASE_URL=model.base_url,
        OPENAI_API_KEY="offline", LLM_MODEL="offline", JOB_RETRIES="0",
        INBOUND_DEBOUNCE_SECONDS="0", TYPING_AFTER_SECONDS="0", TWILIO_STATUS_CALLBACKS="false",
    )  # fmt: skip
    get_settings.cache_clear()
    settings = get_settings()

    from server.app import create_app
    from server.jobs.turn import process_ai_response
    from server.logs import configure_logging

    configure_logging("test", "WARNING")
    with psycopg.connect(database_url) as conn, conn.transaction():
        tenant = tenants.upsert_tenant(
            conn, slug="bench", name="Bench", whatsapp_sender="whatsapp:+14155550199",
            twilio_account_sid=account, twilio_auth_token=token,
        )  # fmt: skip

    url = settings.public_url("/webhooks/inbound")
    try:
        with TestClient(create_app(settings, relay=False)) as client:

            def post_one() -> None:
                form = whatsapp_form(
                    account_sid=account, sender=tenant.whatsapp_sender,
                    user=f"whatsapp:+55119{secrets.randbelow(10**8):08d}", body="Oi, tudo bem?",
                )  # fmt: skip
                response = client.post(
                    "/webhooks/inbound", data=form,
                    headers={"X-Twilio-Signature": sign(token, url, form)},
                )  # fmt: skip
                assert response.status_code == 200, response.text

            timed(post_one, 10)  # warm up
            timed(lambda: client.get("/readyz"), 10)
            healthz = timed(lambda: client.get("/readyz"), args.messages)
            webhook = timed(post_one, args.messages)
        report("webhook ack (signature, store)", webhook, healthz)

        with psycopg.connect(database_url) as conn:
            pending = conn.execute(
                "select tenant_id::text, id, correlation_id from messages "
                "where direction = 'inbound' and status = 'received' order by id limit %s",
                (args.turns,),
            ).fetchall()
        in_memory = build_graph().compile(checkpointer=InMemorySaver())
        turn = iter(range(10**9))

        def bare_graph() -> None:
            in_memory.invoke(
                {"messages": [{"role": "user", "content": "Oi, tudo bem?"}]},
                {"configurable": {"thread_id": f"t{next(turn)}"}},
                context=Context(model="offline", features=[]),
            )

        jobs = iter(pending)
        timed(bare_graph, 3)
        baseline = timed(bare_graph, len(pending))
        if os.environ.get("BENCH_PROFILE"):
            import cProfile

            cProfile.runctx(
                "for job in jobs: process_ai_response(*job)", globals(), locals(),
                os.environ["BENCH_PROFILE"],
            )  # fmt: skip
            return 0
        full = timed(lambda: process_ai_response(*next(jobs)), len(pending))
        report("turn job (Postgres, outbox, enqueue)", full, baseline)
        Redis.from_url(redis_server.url).flushdb()
    finally:
        sandbox.stop()
        model.stop()
        redis_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
