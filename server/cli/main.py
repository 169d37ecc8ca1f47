"""`conversa`: the one console script of the service."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from uuid import UUID

from server.settings import QUEUES, Settings, get_settings


def _settings() -> Settings:
    from server.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.app_env, settings.log_level)
    return settings


def _embedding_dims() -> int:
    from store.settings import EmbeddingSettings

    return EmbeddingSettings().embeddings_dims


def _resolved() -> Settings:
    from server.services import resolve_backends

    return resolve_backends(_settings())


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the API with uvicorn."""
    from server.metrics_env import prepare_api

    prepare_api(args.workers or get_settings().api_workers)  # before prometheus-client loads
    import uvicorn

    from server.api.auth_keys import check_auth_config
    from server.app import create_app
    from server.modelcheck import check_model_at_start
    from store.migrate import check_at_head
    from store.scoping import check_app_role

    settings = _resolved()
    assert settings.database_url
    check_at_head(settings.database_url, embedding_dims=_embedding_dims())
    check_app_role(settings.database_url, settings.database_app_role)
    check_auth_config(settings)
    check_model_at_start(settings)
    workers = args.workers or settings.api_workers
    uvicorn.run(
        "server.app:app_from_env" if workers > 1 else create_app(settings),
        factory=workers > 1,
        workers=workers,
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        log_config=None,
        access_log=settings.api_access_log,
        timeout_graceful_shutdown=settings.api_shutdown_timeout_seconds,
    )
    return 0


def _positive(text: str) -> int:
    """An argparse type: a whole number from 1 to 256."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to 256")
    return value


def cmd_worker(args: argparse.Namespace) -> int:
    """Run an RQ worker."""
    from server.metrics_env import prepare_worker

    prepare_worker()  # before prometheus-client loads
    from server.jobs.worker import run_worker
    from server.modelcheck import check_model_at_start
    from store.migrate import check_at_head
    from store.scoping import check_app_role

    settings = _resolved()
    assert settings.database_url
    check_at_head(settings.database_url, embedding_dims=_embedding_dims())
    check_app_role(settings.database_url, settings.database_app_role)
    if args.metrics_port is not None:
        settings = settings.model_copy(update={"worker_metrics_port": args.metrics_port})
    check_model_at_start(settings)  # before RQ forks: every work horse inherits what it found
    run_worker(settings, args.queues or QUEUES, burst=args.burst, concurrency=args.concurrency)
    return 0


def cmd_check(_: argparse.Namespace) -> int:
    """Check PostgreSQL, Redis, the migrations and the chat model as a worker sees them (exit 1
    if a backend fails or the model cannot call tools)."""
    from graphs.probe import probe_model
    from server.api.health import check_backends, ready

    settings = _resolved()
    assert settings.database_url and settings.redis_url
    checks = check_backends(settings.database_url, settings.redis_url, settings.database_app_role)
    for name, result in checks.items():
        print(f"{name}: {result}")
    report = probe_model()
    for line in report.lines():
        print(line)
    return 0 if ready(checks) and report.usable else 1


def cmd_migrate(_: argparse.Namespace) -> int:
    """Apply pending database migrations."""
    from store.migrate import migrate

    settings = _resolved()
    assert settings.database_url
    done = migrate(settings.database_url, embedding_dims=_embedding_dims())
    print("applied: " + ", ".join(done) if done else "database already at head")
    return 0


def cmd_sweep(_: argparse.Namespace) -> int:
    """Enqueue, once, every stored message that is due a job, overdue reminders, and the date
    notices due now (what the API's relay does)."""
    from server.jobs.date_notices import sweep_date_notices
    from server.jobs.reminders import sweep_reminders
    from server.relay import relay_once
    from server.services import Services

    services = Services.build(_resolved())
    try:
        print(f"enqueued {relay_once(services.pool, services.redis, services.settings)} message(s)")
        reminders = sweep_reminders(services.pool, services.redis, services.settings)
        print(f"enqueued {reminders} overdue reminder(s)")
        print(f"queued {sweep_date_notices()} date notice(s)")
    finally:
        services.close()
    return 0


def cmd_prune(_: argparse.Namespace) -> int:
    """Prune old LangGraph checkpoints once, keeping each thread's latest (what the job does)."""
    from server.jobs.retention import prune_checkpoints

    _resolved()
    print(f"pruned {prune_checkpoints()} thread(s)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the whole service on embedded components with a terminal chat."""
    from server.cli.demo import run_demo

    return run_demo(
        says=args.say or [], timeout=args.timeout, listen=args.listen, channel=args.channel
    )


def cmd_seed_demo(_: argparse.Namespace) -> int:
    """Create (or refresh) the demo tenant and user that `chat` talks as by default."""
    from server.cli.chat import DEMO_SENDER, DEMO_USER
    from server.cli.demo import seed_demo

    settings = _resolved()
    assert settings.database_url
    seed_demo(settings.database_url)
    print(f"demo tenant on {DEMO_SENDER}, demo user {DEMO_USER}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """Chat with a running service as a WhatsApp user."""
    from server.cli.chat import run_chat_from_settings

    return run_chat_from_settings(_settings(), args)


def cmd_token(args: argparse.Namespace) -> int:
    """Print a management API token signed with the configured JWT key."""
    from server.api.auth import Role, mint_token
    from server.api.auth_keys import AuthConfigError

    settings = _settings()
    role, tenant, ttl = Role(args.role), args.tenant, args.ttl
    if tenant is not None:
        try:
            tenant = UUID(tenant)
        except ValueError:
            tenant = _tenant_id_by_slug(tenant)
            if tenant is None:
                print(f"conversa token: no tenant with slug {args.tenant!r}", file=sys.stderr)
                return 2
    try:
        token = mint_token(settings, subject=args.subject, role=role, tenant_id=tenant, ttl=ttl)
    except (AuthConfigError, ValueError) as exc:
        print(f"conversa token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _tenant_id_by_slug(slug: str) -> UUID | None:
    import psycopg

    from store.tenants import tenant_id_by_slug

    settings = _resolved()
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:  # the migrating user: sees all tenants
        return tenant_id_by_slug(conn, slug)


def cmd_sandbox(argv: list[str]) -> int:
    """Serve the local Twilio API sandbox."""
    from channels.sandbox.twilio import main

    return main(argv)


def cmd_offline_llm(argv: list[str]) -> int:
    """Serve the offline model over the OpenAI protocol."""
    from graphs.offline.model import main

    return main(argv)


def cmd_eval(argv: list[str]) -> int:
    """Run the evaluation set through the assistant graph and print a score table."""
    from evals.run import main
    from server.logs import configure_logging

    configure_logging("development", "WARNING")  # the graph's info logs stay out of the table
    return main(argv)


_TOOLS = {"sandbox": cmd_sandbox, "offline-llm": cmd_offline_llm, "eval": cmd_eval}
"""Subcommands that parse their own arguments (see `conversa sandbox --help`)."""


def build_parser() -> argparse.ArgumentParser:
    """Describe the subcommands."""

    parser = argparse.ArgumentParser(
        prog="conversa", description="WhatsApp AI assistant service built on LangGraph."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help=cmd_serve.__doc__)
    serve.add_argument("--host", help="bind address (default API_HOST)")
    serve.add_argument("--port", type=int, help="port (default API_PORT)")
    serve.add_argument("--workers", type=int, help="processes (default API_WORKERS)")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help=cmd_worker.__doc__)
    worker.add_argument("queues", nargs="*", help=f"queues (default: {' '.join(QUEUES)})")
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.add_argument(
        "--metrics-port", type=int, help="serve metrics on this port (default WORKER_METRICS_PORT)"
    )
    worker.add_argument(
        "--concurrency", type=_positive, help="jobs run at once (default WORKER_CONCURRENCY)"
    )
    worker.set_defaults(func=cmd_worker)

    sub.add_parser("check", help=cmd_check.__doc__).set_defaults(func=cmd_check)

    sub.add_parser("migrate", help=cmd_migrate.__doc__).set_defaults(func=cmd_migrate)
    sub.add_parser("sweep", help=cmd_sweep.__doc__).set_defaults(func=cmd_sweep)
    sub.add_parser("prune", help=cmd_prune.__doc__).set_defaults(func=cmd_prune)
    sub.add_parser("seed-demo", help=cmd_seed_demo.__doc__).set_defaults(func=cmd_seed_demo)

    demo = sub.add_parser("demo", help=cmd_demo.__doc__)
    demo.add_argument(
        "--say", action="append", metavar="TEXT", help="send TEXT, print the reply, exit"
    )
    demo.add_argument("--timeout", type=float, default=90.0, help="seconds to wait per reply")
    demo.add_argument(
        "--listen", type=float, default=0.0, metavar="SECONDS",
        help="after the last --say, print messages that arrive on their own (reminders)",
    )  # fmt: skip
    demo.add_argument(
        "--channel", choices=("twilio", "cloud"), default="twilio",
        help="the demo tenant's WhatsApp provider for this run: Twilio (default) or Meta's "
        "Cloud API, each through its local sandbox",
    )  # fmt: skip
    demo.set_defaults(func=cmd_demo)

    chat = sub.add_parser("chat", help=cmd_chat.__doc__)
    chat.add_argument("--sender", help="the tenant's WhatsApp sender (default: the demo's)")
    chat.add_argument("--user", help="who you are (default: the demo user)")
    chat.add_argument("--name", default="Demo User", help="your WhatsApp profile name")
    chat.add_argument("--account-sid", help="the tenant's Twilio account SID (default: the demo's)")
    chat.add_argument("--auth-token", help="the tenant's Twilio auth token (default: the demo's)")
    chat.add_argument("--say", action="append", metavar="TEXT", help="send TEXT and exit")
    chat.add_argument("--timeout", type=float, default=90.0, help="seconds to wait per reply")
    chat.add_argument(
        "--listen", type=float, default=0.0, metavar="SECONDS",
        help="after the last --say, print messages that arrive on their own (reminders)",
    )  # fmt: skip
    chat.set_defaults(func=cmd_chat)

    token = sub.add_parser("token", help=cmd_token.__doc__)
    roles = ("platform_admin", "tenant_admin", "support_agent")
    token.add_argument("--role", required=True, choices=roles, help="the token's role")
    token.add_argument("--tenant", help="tenant id or slug (required for tenant roles)")
    token.add_argument("--subject", default="conversa-cli", help="who the token is for")
    token.add_argument("--ttl", type=int, help="lifetime in seconds (default JWT_TTL_SECONDS)")
    token.set_defaults(func=cmd_token)

    for name, tool in _TOOLS.items():
        sub.add_parser(name, help=tool.__doc__, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `conversa` command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _TOOLS:
        return _TOOLS[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from pydantic import ValidationError

        from graphs.offline.latency import LatencyError
        from server.api.auth_keys import AuthConfigError
        from server.metrics_env import MetricsPortError
        from store.migrate import MigrationsPendingError
        from store.scoping import AppRoleError

        errors = (
            MigrationsPendingError,
            AuthConfigError,
            AppRoleError,
            MetricsPortError,
            LatencyError,
        )
        if isinstance(exc, errors):
            print(f"conversa: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, ValidationError):
            print(f"conversa: invalid configuration (see .env.example):\n{exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
