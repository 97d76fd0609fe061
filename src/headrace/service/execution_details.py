"""jobs.getExecutionDetails and stages.getExecutionDetails (to be filled in)."""

from __future__ import annotations

from dataclasses import dataclass

from headrace.config import Config
from headrace.service.jobs import Jobs
from headrace.store import Store


@dataclass
class ExecutionDetails:
    config: Config
    store: Store
    jobs: Jobs
