"""WorkerMessages and the worker registry (to be filled in)."""

from __future__ import annotations

from dataclasses import dataclass

from headrace.config import Config
from headrace.service.jobs import Jobs
from headrace.service.load import Load
from headrace.service.work_items import WorkItems
from headrace.store import Store


@dataclass
class Workers:
    config: Config
    store: Store
    jobs: Jobs
    work_items: WorkItems
    load: Load

    def sweep(self) -> None:
        pass
