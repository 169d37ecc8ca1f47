"""The RQ worker entry point: listen on the service's queues with the scheduler enabled."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.worker import WorkerStatus

from server import metrics
from server.logs import bind_correlation_id
from server.metrics_env import MetricsPortError
from server.services import redis_client
from server.settings import QUEUE_TRANSCRIBE, QUEUES, Settings

log = structlog.get_logger(__name__)


class CorrelatedWorker(Worker):
    """An RQ worker that binds each job's correlation id before any log line of that job.

    Transcription jobs run in the worker's own process rather than a forked work horse: the
    speech model then loads once per worker and stays loaded (CTranslate2's threads do not
    survive a fork, so a model loaded before forking would hang in the horse).

    With metrics on (`metrics_dir` set), a work horse spools what it records to a file there and
    this process applies it once the horse has exited; every job's duration and outcome is
    recorded here, so a horse that dies still counts.
    """

    metrics_dir: Path | None = None
    metrics_server: Any = None
    _in_horse = False

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run transcriptions in this process (as RQ's SimpleWorker does); fork for the rest."""
        started = time.monotonic()
        try:
            if queue.name != QUEUE_TRANSCRIBE:
                super().execute_job(job, queue)
                return
            self.prepare_execution(job)
            try:
                self.perform_job(job, queue)
            finally:
                structlog.contextvars.clear_contextvars()  # the job's ids stay with the job
            self.set_state(WorkerStatus.IDLE)
        finally:
            if self.metrics_dir is not None:
                metrics.apply_spool(self._spool(job))
            metrics.observe_job(_job_name(job), _outcome(job), time.monotonic() - started)

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        """In the freshly forked horse: let go of the metrics port, spool what the job records."""
        self._in_horse = True
        if self.metrics_server is not None:
            self.metrics_server.socket.close()  # the parent keeps serving it
        if self.metrics_dir is not None:
            metrics.begin_spool()
        super().main_work_horse(job, queue)

    def get_heartbeat_ttl(self, job: Job) -> int:
        """Cover a whole in-process job: nothing else heartbeats while it runs."""
        if job.origin == QUEUE_TRANSCRIBE and job.timeout and job.timeout > 0:
            return int(job.timeout) + 60
        return super().get_heartbeat_ttl(job)

    def perform_job(self, job: Job, queue: Queue) -> bool:
        """Bind the job's correlation id (from its meta), then run it as RQ does."""
        structlog.contextvars.clear_contextvars()  # nothing of the previous job
        correlation_id = job.meta.get("correlation_id")
        if correlation_id:
            bind_correlation_id(str(correlation_id), rq_job_id=job.id)
        else:
            structlog.contextvars.bind_contextvars(rq_job_id=job.id)
        if not (self._in_horse and self.metrics_dir is not None):
            return super().perform_job(job, queue)
        try:
            return super().perform_job(job, queue)
        finally:  # the horse exits right after: hand what it recorded to the parent
            metrics.end_spool(self._spool(job))

    def _spool(self, job: Job) -> Path:
        assert self.metrics_dir is not None
        return self.metrics_dir / f"{job.id}.json"


def _job_name(job: Job) -> str:
    return (job.func_name or "unknown").rsplit(".", 1)[-1]


def _outcome(job: Job) -> str:
    """finished, failed, retried (queued or scheduled again), or what RQ says."""
    try:
        status = job.get_status(refresh=True)
    except Exception:
        return "unknown"
    if status in (JobStatus.SCHEDULED, JobStatus.QUEUED):
        return "retried"
    return str(status.value if isinstance(status, JobStatus) else status or "unknown")


def run_worker(settings: Settings, queues: Sequence[str] = QUEUES, *, burst: bool = False) -> bool:
    """Work jobs from `queues` until stopped (or until empty, with `burst`)."""
    if not settings.redis_url:
        raise RuntimeError("resolve_backends() must run before the worker starts")
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown:
        raise ValueError(f"Unknown queue(s) {', '.join(unknown)}; choose from {', '.join(QUEUES)}.")
    # Import the jobs (LangGraph, LangChain, Twilio) once here, before RQ forks per job.
    import server.jobs.send
    import server.jobs.transcribe
    import server.jobs.turn  # noqa: F401

    redis = redis_client(settings.redis_url)
    worker = CorrelatedWorker([Queue(name, connection=redis) for name in queues], connection=redis)
    if settings.worker_metrics_port:
        host, port = settings.worker_metrics_host, settings.worker_metrics_port
        try:
            worker.metrics_server = metrics.serve_worker_metrics(host, port)
        except OSError as exc:
            raise MetricsPortError(
                f"Cannot serve worker metrics on {host}:{port} ({exc.strerror}): give each worker "
                "on this machine its own WORKER_METRICS_PORT (or --metrics-port), or 0 for none."
            ) from exc
        worker.metrics_dir = Path(tempfile.mkdtemp(prefix="conversa-worker-metrics-"))
        log.info("worker metrics served", url=f"http://{host}:{port}/metrics")
    log.info("worker starting", queues=list(queues), burst=burst)
    try:
        return worker.work(with_scheduler=True, burst=burst, logging_level=settings.log_level)
    finally:
        if worker.metrics_server is not None:
            worker.metrics_server.shutdown()
        if worker.metrics_dir is not None:
            shutil.rmtree(worker.metrics_dir, ignore_errors=True)
