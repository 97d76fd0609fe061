"""The domain, with no HTTP: one object per API resource, wired together here."""

from __future__ import annotations

from headrace.config import Config
from headrace.service.debug import Debug
from headrace.service.execution_details import ExecutionDetails
from headrace.service.flex_templates import FlexTemplates
from headrace.service.jobs import Jobs
from headrace.service.load import Load
from headrace.service.messages import Messages
from headrace.service.metrics import Metrics
from headrace.service.snapshots import Snapshots
from headrace.service.templates import Templates
from headrace.service.work_items import WorkItems
from headrace.service.workers import Workers
from headrace.storage import Storage
from headrace.store import Store


class Services:
    def __init__(self, config: Config, store: Store):
        self.config = config
        self.store = store
        self.load = Load(config.busy_requests)
        self.storage = Storage.for_data_dir(config.data_dir)
        self.jobs = Jobs(config, store, self.storage)
        self.messages = Messages(config, store, self.jobs)
        self.metrics = Metrics(config, store, self.jobs)
        self.work_items = WorkItems(config, store, self.jobs, self.metrics)
        self.execution_details = ExecutionDetails(config, store, self.jobs)
        self.workers = Workers(config, store, self.jobs, self.work_items, self.load)
        self.debug = Debug(config, store, self.jobs, self.workers)
        self.snapshots = Snapshots(config, store, self.jobs)
        self.templates = Templates(config, store, self.jobs, self.storage)
        self.flex_templates = FlexTemplates(config, store, self.jobs, self.storage, self.templates)

    def sweep(self) -> None:
        """Periodic upkeep: expired leases, silent workers, finished cancels, snapshot ttl."""
        self.work_items.sweep()
        self.jobs.sweep()
        self.workers.sweep()
        self.snapshots.sweep()
