"""Choose how a process counts its metrics, before anything imports prometheus-client.

prometheus-client decides at import time, from `PROMETHEUS_MULTIPROC_DIR`, whether a process
counts in memory or in files shared by several processes; so these run first in `conversa serve`
and `conversa worker`, and import nothing of it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class MetricsPortError(RuntimeError):
    """A worker's metrics port cannot be served; the message says what to change."""


def prepare_api(workers: int) -> None:
    """Make every API process count into one directory.

    An operator's `PROMETHEUS_MULTIPROC_DIR` is emptied (a previous run's counts must not add
    up with this one's); with several workers and none set, a private one is made (and removed
    when this process exits).
    """
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for stale in Path(directory).glob("*.db"):
            stale.unlink(missing_ok=True)
    elif workers > 1:
        made = tempfile.mkdtemp(prefix="conversa-api-metrics-")
        os.environ[MULTIPROC_ENV] = made
        atexit.register(shutil.rmtree, made, ignore_errors=True)


def prepare_worker() -> None:
    """Count in memory: a worker serves its own registry, and must not add its counts to the
    API's directory when the environment names one."""
    os.environ.pop(MULTIPROC_ENV, None)
