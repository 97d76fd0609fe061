"""workItems.lease and workItems.reportStatus: Dataflow's lease protocol (to be filled in)."""

from __future__ import annotations

from dataclasses import dataclass

from headrace.config import Config
from headrace.service.jobs import Jobs
from headrace.service.metrics import Metrics
from headrace.store import Store


@dataclass
class WorkItems:
    config: Config
    store: Store
    jobs: Jobs
    metrics: Metrics

    def sweep(self) -> None:
        pass
