"""WorkerMessages and the worker registry.

Workers report health, resource use, lifecycle events, message codes and shutdowns; the
registry keeps one row per worker of a job (store/workers.py). A request is ingested in one
write transaction that reads each affected row once (see service/worker_ingest.py), so a
batch of a hundred messages costs about what one does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.engine import Connection

from headrace import wire
from headrace.config import Config
from headrace.errors import invalid, not_found
from headrace.service.jobs import Jobs, message
from headrace.service.load import Load
from headrace.service.work_items import WorkItems
from headrace.service.worker_ingest import Ingest
from headrace.store import Store
from headrace.store import messages as message_rows
from headrace.store import workers as worker_rows

SILENT_INTERVALS = 3  # a worker silent for this many report intervals is lost


@dataclass
class Workers:
    config: Config
    store: Store
    jobs: Jobs
    work_items: WorkItems
    load: Load

    def report_interval(self) -> float:
        """Seconds between health reports; a busy service asks for fewer (back-pressure)."""
        factor = self.config.busy_interval_factor if self.load.busy else 1.0
        return self.config.health_interval * factor

    # ---- WorkerMessages -------------------------------------------------------------

    def send(self, project_id: str, location: str, body: dict) -> dict:
        messages = body.get("workerMessages", [])
        keys = [_key(i, m) for i, m in enumerate(messages)]
        by_job: dict[str, set[str]] = {}
        for job_id, worker_id in keys:
            by_job.setdefault(job_id, set()).add(worker_id)
        ingest = Ingest(wire.format_time(wire.now()), self.report_interval(), {})
        with self.store.write() as conn:
            for job_id, worker_ids in by_job.items():
                if worker_rows.job_place(conn, job_id) != (project_id, location):
                    first = next(i for i, k in enumerate(keys) if k[0] == job_id)
                    raise not_found(f"Job {job_id}, named by the JOB_ID label of workerMessages[{first}], "
                                    f"was not found in project {project_id}, location {location}.")
                for worker_id, row in worker_rows.load(conn, job_id, list(worker_ids)).items():
                    ingest.workers[(job_id, worker_id)] = row
            responses = [ingest.apply(key, m) for key, m in zip(keys, messages)]
            new, changed = ingest.rows()
            worker_rows.insert_many(conn, new)
            worker_rows.save_many(conn, changed)
            worker_rows.add_samples(conn, ingest.samples)
            for job_id, job_messages in ingest.job_messages.items():
                message_rows.insert_many(conn, job_id, job_messages)
            for job_id, worker_id, reason in ingest.releases:
                self.work_items.release_worker(conn, job_id, worker_id, reason)
        return {"workerMessageResponses": responses}

    # ---- reads ----------------------------------------------------------------------

    def known(self, conn: Connection, job_id: str, worker_id: str) -> dict:
        """The registry row of a worker that has reported for the job, else NOT_FOUND."""
        worker = worker_rows.get(conn, job_id, worker_id) if worker_id else None
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
