"""One leased work item, from lease to its last status report.

The worker starts the item's pipeline on the execution backend and then watches it: status
reports at the interval the service asks for (each renews the lease and carries progress and
metrics), health and resource reports at the interval WorkerMessages answers with, lifecycle
events as the executor moves through its phases, and the final report: completed, with the
pipeline's traceback as the error when it failed. A report answered with `completeWorkStatus`
(the job is being cancelled) stops the pipeline; a refused report (the lease is lost) abandons
it. See docs/workers.md.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from typing import TYPE_CHECKING

import httpx

from headrace import wire
from headrace.execution import CANCELLED, DONE, FAILED, RUNNING, TERMINAL, Execution, Progress, Task
from headrace.execution.staging import local_path
from headrace.worker import user_code
from headrace.worker.client import ServiceError
from headrace.worker.messages import Container
from headrace.worker.metrics import metric_updates, stage_update

if TYPE_CHECKING:
    from headrace.worker import Worker

log = logging.getLogger("headrace.worker")

TICK = 0.05  # how often the executor's progress is looked at
UNKNOWN_CODE = 2  # google.rpc.Code.UNKNOWN: the pipeline raised
# Refusals that retrying cannot fix: the lease is lost (400), the item or job is gone (404),
# or the report is out of sequence (409): the item is abandoned.
LOST = (400, 404, 409)
# The executor's phases (execution/child.py) that lifecycle events follow.
STAGING, INSTALLING = "staging files", "installing"


class LeaseLost(Exception):
    pass


class ItemRun:
    def __init__(self, worker: "Worker", item: dict):
        self.worker = worker
        self.api = worker.api
        self.item = item
        self.config = json.loads(item.get("configuration") or "{}")
        self.location = self.config.get("location") or worker.config.default_location
        self.container = Container(item["jobId"], worker.api.worker_id)
        self.index = int(item["initialReportIndex"])
        self.lease_expire = wire.parse_time(item["leaseExpireTime"])
        self.report_interval = _seconds(item.get("reportStatusInterval"), worker.config.report_status_seconds)
        self.health_interval = worker.config.health_interval
        self.events: set[str] = set()
        self.work_dir = worker.work_root / f"{item['jobId']}-{item['id']}-{self.index}"

    # ---- the run ------------------------------------------------------------------------

    def run(self) -> None:
        options = (self.config.get("sdkPipelineOptions") or {}).get("options") or {}
        url = self.config.get("pipelineUrl") or options.get("pipelineUrl") or ""
        task = Task(url, options, tuple(self.item.get("packages") or ()), _script_dirs(url))
        self.send(self.container.lifecycle("CONTAINER_START"), *self.health_messages())
        execution = self.worker.backend.run(task, self.work_dir)
        self.send(self.container.lifecycle("STAGING_FILES_DOWNLOAD_START"))
        try:
            outcome = self.watch(execution)
        except LeaseLost as lost:
            log.warning("Work item %s of job %s abandoned: %s", self.item["id"], self.item["jobId"], lost)
            execution.cancel()
            return
        except BaseException:
            execution.cancel()
            raise
        if outcome in (DONE, CANCELLED):
            shutil.rmtree(self.work_dir, ignore_errors=True)  # a failed run keeps its executor.log

    def watch(self, execution: Execution) -> str | None:
        """Supervise until the run ends; the execution state it ended in, None if the worker
        is stopping."""
        next_report = time.monotonic() + self.report_interval
        next_health = time.monotonic() + self.health_interval
        while True:
            progress = execution.progress()
            self.lifecycle(progress)
            if self.worker.stopping.is_set():
                self.shut_down(execution)
                return None
            if progress.state in TERMINAL:
                self.finish(execution, progress)
                return progress.state
            now = time.monotonic()
            if now >= next_report:
                answer = self.report(self.status(execution, progress))
                if "completeWorkStatus" in answer:
                    log.info("Job %s is stopping: %s", self.item["jobId"], answer["completeWorkStatus"].get("message"))
                    execution.cancel()
                    self.finish(execution, execution.progress(), stopped=True)
                    return CANCELLED
                next_report = time.monotonic() + self.report_interval
            if now >= next_health:
                self.send(*self.health_messages())
                next_health = time.monotonic() + self.health_interval
            time.sleep(TICK)

    def finish(self, execution: Execution, progress: Progress, stopped: bool = False) -> None:
        status = self.status(execution, progress) | {"completed": True}
        if progress.state == FAILED and not stopped:
            status["errors"] = [{"code": UNKNOWN_CODE, "message": progress.error}]
            if STAGING not in self.events:
                self.send(self.container.code("STAGING_FILES_DOWNLOAD_ERROR"))
            elif INSTALLING in self.events and "installed" not in self.events:
                self.send(self.container.code("PACKAGE_INSTALL_ERROR"))
        self.send(*self.health_messages())
        self.report(status)
        log.info("Work item %s of job %s: %s", self.item["id"], self.item["jobId"],
                 "stopped" if stopped else progress.state)

    def shut_down(self, execution: Execution) -> None:
        """Told to stop (SIGTERM): stop the pipeline, then say so, which releases the item at
        once for another worker instead of when its lease runs out."""
        execution.cancel()
        self.send(self.container.shutdown("UNKNOWN"), attempts=2)
        log.info("Shut down; work item %s of job %s released", self.item["id"], self.item["jobId"])

    # ---- what is reported -----------------------------------------------------------------

    def status(self, execution: Execution, progress: Progress) -> dict:
        updates = metric_updates(execution.metrics()) + ([stage_update(progress.stages)] if progress.stages else [])
        return {"workItemId": self.item["id"], "reportIndex": str(self.index),
                "requestedLeaseDuration": wire.format_duration(self.worker.config.worker_lease_seconds),
                "reportedProgress": {"fractionConsumed": progress.fraction},
                "metricUpdates": updates}

    def lifecycle(self, progress: Progress) -> None:
        """Lifecycle events and message codes as the executor passes each phase. A phase may
        be over before it was seen (staging takes milliseconds), so each event is sent once,
        when it is first implied."""
        started = progress.state in (RUNNING, DONE)
        installing = progress.phase.startswith(INSTALLING) or bool(progress.environment)
        due = []
        if STAGING not in self.events and (started or installing or (progress.phase and progress.phase != STAGING)):
            due.append(("STAGING_FILES_DOWNLOAD_FINISH", STAGING, {}))
        if INSTALLING not in self.events and installing:
            due.append(("SDK_INSTALL_START", INSTALLING, {}))
        if "installed" not in self.events and progress.environment:
            cached = {"cached": str(not progress.environment.get("installed")).lower()}
            due.append(("SDK_INSTALL_FINISH", "installed", cached))
        messages = [self.container.lifecycle(event, **meta) for event, _, meta in due]
        self.events.update(key for _, key, _ in due)
        if "harness" not in self.events and started:
            self.events.add("harness")
            messages.append(self.container.code("HARNESS_STARTED"))
        if messages:
            self.send(*messages)

    def health_messages(self) -> list[dict]:
        return [self.container.health(self.health_interval, self.worker.started),
                self.container.message(workerMetrics=self.worker.resources.sample())]

    # ---- talking to the service -------------------------------------------------------------

    def report(self, status: dict) -> dict:
        """Send one status report, retrying it unchanged (so it is applied once) until the
        service answers or the lease has run out."""
        delay = 0.1
        while True:
            try:
                answer = self.api.report(self.item, self.location, status)
                break
            except ServiceError as error:
                if error.status in LOST:
                    raise LeaseLost(str(error)) from None
                problem = str(error)
            except httpx.HTTPError as error:
                problem = f"{type(error).__name__}: {error}"
            if wire.now() >= self.lease_expire or self.worker.stopping.is_set():
                raise LeaseLost(f"could not report before the lease expired ({problem})")
            log.warning("Status report on work item %s failed, retrying: %s", self.item["id"], problem)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        self.index = int(answer["nextReportIndex"])
        self.lease_expire = wire.parse_time(answer["leaseExpireTime"])
        self.report_interval = _seconds(answer.get("reportStatusInterval"), self.report_interval)
        return answer

    def send(self, *messages: dict, attempts: int = 1) -> None:
        """WorkerMessages are best effort: a lost health report costs nothing the next one
        does not make good, and must not hold up the pipeline's status reports."""
        for attempt in range(attempts):
            try:
                answers = self.api.send(self.item["projectId"], self.location, list(messages))
            except (ServiceError, httpx.HTTPError) as error:
                log.warning("WorkerMessages for job %s failed: %s", self.item["jobId"], error)
                if attempt + 1 < attempts:
                    time.sleep(0.2)
                continue
            for answer in answers:
                interval = answer.get("workerHealthReportResponse", {}).get("reportInterval")
                self.health_interval = _seconds(interval, self.health_interval)
            return


def _seconds(duration: str | None, default: float) -> float:
    try:
        seconds = wire.parse_duration(duration).total_seconds() if duration else 0.0
    except ValueError:
        seconds = 0.0
    return seconds if seconds > 0 else default


def _script_dirs(url: str) -> tuple[str, ...]:
    """The submitting script's directory, when the pipeline names one on this disk."""
    from apache_beam.portability.api import beam_runner_api_pb2

    try:
        pipeline = beam_runner_api_pb2.Pipeline.FromString(local_path(url).read_bytes())
    except Exception:  # noqa: BLE001 - unreadable or corrupt: the executor reports it
        return ()
    return user_code.script_dirs(pipeline)

