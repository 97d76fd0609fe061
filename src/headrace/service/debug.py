"""jobs.debug.getConfig, sendCapture, getWorkerStacktraces (to be filled in)."""

from __future__ import annotations

from dataclasses import dataclass

from headrace.config import Config
from headrace.service.jobs import Jobs
from headrace.service.workers import Workers
from headrace.store import Store


@dataclass
class Debug:
    config: Config
    store: Store
    jobs: Jobs
    workers: Workers
