"""WorkerMessages and the worker registry.

Workers report health, resource use, lifecycle events, message codes and shutdowns; the
registry keeps one row per worker of a job (store/workers.py). A request is ingested in one
write transaction that reads and writes each affected row once (service/worker_ingest.py),
and requests that arrive together share that transaction, so a commit's fsync is paid once
for all of them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.engine import Connection

from headrace import wire
from headrace.config import Config
from headrace.errors import ApiError, invalid, not_found
from headrace.service.jobs import Jobs, message
from headrace.service.load import Load
from headrace.service.work_items import WorkItems
from headrace.service.worker_ingest import Ingest
from headrace.store import Store
from headrace.store import messages as message_rows
from headrace.store import workers as worker_rows

SILENT_INTERVALS = 3  # a worker silent for this many report intervals is lost
MAX_PLACES = 4096  # jobs whose place is remembered
# Larger groups are ingested in a thread. Measured: 1,000 messages hold the event loop ~17 ms,
# 2,000 ~31 ms; a limit of 1,000 cost batches of 100 a quarter of their throughput (32
# connections of them make groups of up to 3,200), so the loop may stall up to ~0.1 s.
LOOP_MESSAGES = 5000


@dataclass
class _Request:
    """One WorkerMessages request, waiting for its share of a transaction."""
    project_id: str
    location: str
    keys: list[tuple[str, str]]  # (job id, worker id) of each message
    messages: list[dict]
    future: asyncio.Future
    error: Exception | None = None  # refused before the commit (unknown job)
    answer: dict | None = None


@dataclass
class Workers:
    config: Config
    store: Store
    jobs: Jobs
    work_items: WorkItems
    load: Load
    _queue: list[_Request] = field(default_factory=list, init=False, repr=False)
    _committer: asyncio.Task | None = field(default=None, init=False, repr=False)  # while it runs
    # Where each job is: a job's project and location never change, so found ones are kept.
    _places: dict[str, tuple[str, str]] = field(default_factory=dict, init=False, repr=False)

    def report_interval(self) -> float:
        """Seconds between health reports; a busy service asks for fewer (back-pressure)."""
        factor = self.config.busy_interval_factor if self.load.busy else 1.0
        return self.config.health_interval * factor

    # ---- WorkerMessages -------------------------------------------------------------

    async def send(self, project_id: str, location: str, body: dict) -> dict:
        """Ingest a SendWorkerMessagesRequest; its SendWorkerMessagesResponse once committed.

        A commit costs an fsync, longer than ingesting a batch of messages, so the requests
        that arrive while one transaction commits all go into the next (group commit). The
        queue lives on the event loop: a request waits on a plain future. When the store can
        begin a transaction at once (SQLite, no other writer) and the group is not large, the
        messages are ingested right on the loop and only the commit, an fsync that holds no
        lock on Python, goes to a thread: measured side by side, handing the whole transaction
        to a thread cost a third more server CPU per single-message request. Otherwise the
        transaction runs in a thread, so the loop never waits long, on another writer or on the
        network.
        """
        messages = body.get("workerMessages", [])
        request = _Request(project_id, location, [_key(i, m) for i, m in enumerate(messages)], messages,
                           asyncio.get_running_loop().create_future())
        self._queue.append(request)
        if self._committer is None:
            self._committer = asyncio.get_running_loop().create_task(self._commit_queued())
        return await request.future

    async def _commit_queued(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    await self._commit_batch(batch)
                except Exception as error:  # noqa: BLE001 - rolled back; each waiter raises it
                    for request in batch:
                        request.error = error
                for request in batch:
                    if request.future.done():  # its client went away
                        continue
                    if request.error is not None:
                        request.future.set_exception(request.error)
                    else:
                        request.future.set_result(request.answer)
        finally:
            self._committer = None

    def _commit(self, batch: list[_Request]) -> None:
        """Ingest a batch in one transaction; a request refused (unknown job) writes nothing."""
        with self.store.write() as conn:
            self._ingest(conn, batch)

    async def _commit_batch(self, batch: list[_Request]) -> None:
        large = sum(len(request.messages) for request in batch) > LOOP_MESSAGES
        write = None if large else self.store.begin_if_free()
        if write is None:
            await asyncio.to_thread(self._commit, batch)
            return
        try:
            self._ingest(write.conn, batch)
        except BaseException:
            write.rollback()
            raise
        await asyncio.to_thread(write.commit)  # the loop takes the next requests meanwhile

    def _ingest(self, conn: Connection, batch: list[_Request]) -> None:
        ingest = Ingest(wire.format_time(wire.now()), self.report_interval(), {})
        accepted = []
        for request in batch:
            try:
                self._check_places(conn, request)
            except ApiError as error:
                request.error = error
                continue
            accepted.append(request)
        self._load(conn, ingest, accepted)
        for request in accepted:
            request.answer = {"workerMessageResponses": [
                ingest.apply(key, m) for key, m in zip(request.keys, request.messages)]}
        new, changed = ingest.rows()
        worker_rows.insert_many(conn, new)
        worker_rows.save_many(conn, changed)
        worker_rows.add_samples(conn, ingest.samples)
        for job_id, job_messages in ingest.job_messages.items():
            message_rows.insert_many(conn, job_id, job_messages)
        for job_id, worker_id, reason in ingest.releases:
            self.work_items.release_worker(conn, job_id, worker_id, reason)

    def _check_places(self, conn: Connection, request: _Request) -> None:
        """Every job the request names must be in the request's project and location."""
        for index, (job_id, _) in enumerate(request.keys):
            if job_id not in self._places:
                place = worker_rows.job_place(conn, job_id)
                if place is not None:
                    if len(self._places) >= MAX_PLACES:
                        self._places.clear()
                    self._places[job_id] = place
            if self._places.get(job_id) != (request.project_id, request.location):
                raise not_found(f"Job {job_id}, named by the JOB_ID label of workerMessages[{index}], was "
                                f"not found in project {request.project_id}, location {request.location}.")

    @staticmethod
    def _load(conn: Connection, ingest: Ingest, requests: list[_Request]) -> None:
        """Read the registry rows of every worker the requests name, in one query."""
        keys = list({key for request in requests for key in request.keys})
        if keys:
            ingest.workers.update(worker_rows.load(conn, keys))

    # ---- reads ----------------------------------------------------------------------

    def known(self, conn: Connection, job_id: str, worker_id: str) -> dict:
        """The registry row of a worker that has reported for the job, else NOT_FOUND."""
        worker = worker_rows.get(conn, job_id, worker_id)
        if worker is None:
            raise not_found(f"Worker {worker_id!r} is not known to job {job_id}: a worker becomes known "
                            "when it sends WorkerMessages labelled with the job's JOB_ID and its WORKER_ID.")
        return worker

    # ---- upkeep ---------------------------------------------------------------------

    def sweep(self) -> None:
        """Mark workers lost whose reports stopped for SILENT_INTERVALS of their interval."""
        now = wire.now()
        # Nobody reports less often than we ask, so this bound only narrows the index scan.
        bound = now - timedelta(seconds=SILENT_INTERVALS * self.config.health_interval)
        with self.store.read() as conn:
            candidates = worker_rows.silent(conn, wire.format_time(bound))
        for job_id, worker_id, last_seen, interval, job_ended in candidates:
            silence = now - wire.parse_time(last_seen)
            if silence >= SILENT_INTERVALS * wire.parse_duration(interval):
                with self.store.write() as conn:
                    self._silent(conn, job_id, worker_id, last_seen, job_ended, silence)

    def _silent(self, conn: Connection, job_id: str, worker_id: str, last_seen: str,
                job_ended: bool, silence: timedelta) -> None:
        worker = worker_rows.get(conn, job_id, worker_id)
        if worker is None or worker["state"] not in worker_rows.ALIVE or worker["lastSeen"] != last_seen:
            return  # it reported while we looked
        worker["previousState"] = worker["state"]
        worker["stateTime"] = wire.format_time(wire.now())
        worker["stateEventTime"] = ""  # any later report counts, whatever the worker's clock says
        if job_ended:
            # Workers of a finished job go quiet by design: no alarm, nothing to release.
            worker["state"], worker["stateReason"] = "STOPPED", "JOB_ENDED"
            worker_rows.save_many(conn, [worker])
            return
        worker["state"], worker["stateReason"] = "LOST", "NO_REPORTS"
        worker_rows.save_many(conn, [worker])
        interval = worker["livenessInterval"]
        text = (f"Worker {worker_id} lost contact with the service: no report for "
                f"{wire.format_duration(round(silence.total_seconds(), 1))} ({SILENT_INTERVALS} report "
                f"intervals of {interval}). Any work it held was released for retry.")
        self.work_items.release_worker(conn, job_id, worker_id, f"it sent no report for {SILENT_INTERVALS} "
                                      f"report intervals of {interval}")
        message_rows.insert_many(conn, job_id, [message("WARNING", text)])


def _key(index: int, msg: dict) -> tuple[str, str]:
    labels = msg.get("labels", {})
    job_id, worker_id = labels.get("JOB_ID"), labels.get("WORKER_ID")
    if not job_id or not worker_id:
        missing = " and ".join(n for n, v in (("JOB_ID", job_id), ("WORKER_ID", worker_id)) if not v)
        raise invalid(f"workerMessages[{index}] has no {missing} label: every worker message must name "
                      "its job and worker in labels, e.g. {\"JOB_ID\": \"2026-01-02_03_04_05-123\", "
                      "\"WORKER_ID\": \"wordcount-vm-1\"}.")
    return job_id, worker_id
