"""Snapshots of streaming jobs: records, lifecycle and ttl (to be filled in)."""

from __future__ import annotations

from dataclasses import dataclass

from headrace.config import Config
from headrace.service.jobs import Jobs
from headrace.store import Store


@dataclass
class Snapshots:
    config: Config
    store: Store
    jobs: Jobs

    def sweep(self) -> None:
        pass
