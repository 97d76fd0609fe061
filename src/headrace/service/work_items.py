"""workItems.lease and workItems.reportStatus: Dataflow's lease protocol.

A work item is leased to one worker at a time, for a limited time. Each status report renews
the lease and carries the report index the previous answer asked for, so a lost answer can be
retried safely and a stale report is refused. A lease that runs out, or a worker that is
released, puts the item back in the pool; after `max_attempts` failed attempts the job fails.
docs/work-items.md describes the protocol and the choices Headrace made.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

import orjson
from sqlalchemy.engine import Connection

from headrace import wire
from headrace.config import Config
from headrace.errors import ApiError, invalid, not_found, precondition
from headrace.service import pipeline_graph
from headrace.service.jobs import Jobs, message
from headrace.service.metrics import Metrics
from headrace.store import Store
from headrace.store import jobs as job_rows
from headrace.store import messages as message_rows
from headrace.store import work_items as item_rows
from headrace.store.jobs import TERMINAL

ANY = "-"  # AIP-159 wildcard: lease from any project, location or job
LEASABLE = ("JOB_STATE_PENDING", "JOB_STATE_QUEUED", "JOB_STATE_RUNNING")
# A stopping job's items end, and the job then settles, in these states.
STOPPING = {"JOB_STATE_CANCELLING": "JOB_STATE_CANCELLED", "JOB_STATE_DRAINING": "JOB_STATE_DRAINED"}
MAX_LEASE_SECONDS = 600.0  # a worker renews its lease with every report; this bounds a lost one
CANCELLED_CODE = 1  # google.rpc.Code.CANCELLED


@dataclass
class WorkItems:
    config: Config
    store: Store
    jobs: Jobs
    metrics: Metrics

    # ---- lease -------------------------------------------------------------------------

    def lease(self, project_id: str, location: str, job_id: str, body: dict) -> dict:
        worker_id = _worker_id(body)
        duration = self._lease_duration(body.get("requestedLeaseDuration"))
        moment = wire.now()
        now, expire = wire.format_time(moment), wire.format_time(moment + duration)
        scope = {"project_id": None if project_id == ANY else project_id,
                 "location": None if location == ANY else location,
                 "job_id": None if job_id == ANY else job_id}
        with self.store.write() as conn:
            if job_id != ANY:
                self._job(conn, project_id, location, job_id)  # an unknown job is a 404, not "no work"
            while (item := item_rows.next_pending(conn, job_states=LEASABLE, **scope)) is not None:
                index = item["next_report_index"] + 1  # skip one: a stale holder's next index is refused
                if item_rows.claim(conn, item, worker_id, expire, index, now):
                    break
            if item is None:
                return {}
            job = job_rows.get(conn, item["job_id"])
            stage_started = _set_stage(job, item["stage_id"], "JOB_STATE_RUNNING", now)
            if job["currentState"] != "JOB_STATE_RUNNING":
                self.jobs.transition(conn, job, "JOB_STATE_RUNNING", "Workers have started successfully.")
            elif stage_started:
                job_rows.save(conn, job)
        work_item = orjson.loads(item["body"]) | {
            "id": str(item["id"]), "initialReportIndex": str(index), "leaseExpireTime": expire,
            "reportStatusInterval": self._report_interval(duration)}
        return {"workItems": [work_item]}

    # ---- reportStatus --------------------------------------------------------------------

    def report_status(self, project_id: str, location: str, job_id: str, body: dict) -> dict:
        """One answer per status, in order. A rejected status rejects the whole request, and
        nothing of it is applied: the worker retries it unchanged or abandons the item."""
        if job_id == ANY:
            raise invalid("workItems:reportStatus needs the job's id in its path; the '-' wildcard "
                          "is only for workItems:lease.")
        worker_id = _worker_id(body)
        with self.store.write() as conn:
            self._job(conn, project_id, location, job_id)
            states = [self._report(conn, job_id, worker_id, status)
                      for status in body.get("workItemStatuses", [])]
        return {"workItemServiceStates": states}

    def _report(self, conn: Connection, job_id: str, worker_id: str, status: dict) -> dict:
        moment = wire.now()
        now = wire.format_time(moment)
        job = job_rows.get(conn, job_id)
        item = _item_of(conn, job_id, status.get("workItemId"))
        index = int(status.get("reportIndex", "0"))
        digest = hashlib.sha256(orjson.dumps(status, option=orjson.OPT_SORT_KEYS)).hexdigest()
        last = orjson.loads(item["last_report"]) if item["last_report"] else None
        if last and (last.get("worker"), last.get("index"), last.get("digest")) == (worker_id, index, digest):
            return last["answer"]  # a retry of a report already applied: the same answer again
        if item["state"] != "LEASED" or item["worker_id"] != worker_id or item["lease_expire"] < now:
            if item["worker_id"] == worker_id and job["currentState"] in TERMINAL:
                # The job ended under the worker (e.g. it was marked done): tell it to stop.
                return {"completeWorkStatus": {"code": CANCELLED_CODE, "message": (
                            f"Job {job_id} has ended in state {job['currentState']}; stop work on this item.")},
                        "leaseExpireTime": now, "nextReportIndex": str(index + 1)}
            raise precondition(_not_holder(item, worker_id, now))
        expected = item["next_report_index"]
        if index != expected:
            raise ApiError("ABORTED", _unexpected_index(item, index, expected, last))
        metric_updates, stages = pipeline_graph.take_stages(status.get("metricUpdates", []))
        self.metrics.record(conn, job_id, metric_updates, status.get("counterUpdates", []), now)
        record = {"worker": worker_id, "index": index, "digest": digest, "progress": _progress(status)}
        runs = (last or {}).get("stages") or {}  # of this attempt so far: a claim clears last_report
        if stages:
            runs = pipeline_graph.stage_runs(runs, stages, now)
        if status.get("completed"):
            answer = {"leaseExpireTime": now, "nextReportIndex": str(index + 1),
                      "reportStatusInterval": self._report_interval(self._lease_duration(None))}
            errors = status.get("errors", [])
            item_state, attempt_state = self._outcome(job, item, failed=bool(errors))
            runs = pipeline_graph.end_runs(runs, attempt_state, now)
            self._fused_stages(conn, job, stages, runs, now, retry=item_state == "PENDING")
            record["stages"] = runs
            item_rows.end_attempt(conn, item, item_state=item_state, attempt_state=attempt_state, now=now,
                                  last_report=record | {"answer": answer}, next_index=index + 1)
            # Beam prints a failed job's ERROR messages as the reason it failed.
            message_rows.insert_many(conn, job_id, [message("ERROR", _error_text(item, e), now) for e in errors])
            self._after_attempt(conn, job, item, item_state, now, lost=False)
            return answer
        duration = self._lease_duration(status.get("requestedLeaseDuration"))
        answer = {"leaseExpireTime": wire.format_time(moment + duration), "nextReportIndex": str(index + 1),
                  "reportStatusInterval": self._report_interval(duration)}
        if job["currentState"] in STOPPING:
            answer["completeWorkStatus"] = {"code": CANCELLED_CODE, "message": _stop_message(job)}
        self._fused_stages(conn, job, stages, runs, now)
        record["stages"] = runs
        item_rows.renew(conn, item["id"], answer["leaseExpireTime"], index + 1, record | {"answer": answer})
        return answer

    def _fused_stages(self, conn: Connection, job: dict, stages: list[dict] | None, runs: dict, now: str,
                      retry: bool = False) -> None:
        """The job's execution graph and stageStates follow the fused stages its worker reports.
        A stage whose attempt failed is still running while its item waits for a retry."""
        changed = False
        if stages:
            description = job.setdefault("pipelineDescription", {})
            graph = pipeline_graph.execution_stages(stages, job.get("steps") or [])
            changed = description.get("executionPipelineStage") != graph
            description["executionPipelineStage"] = graph
        for stage_id, run in runs.items():
            state = "RUNNING" if retry and run["state"] == "FAILED" else run["state"]
            changed = _set_stage(job, stage_id, pipeline_graph.JOB_STATES[state], now) or changed
        if changed:
            job_rows.save(conn, job)

    def _outcome(self, job: dict, item, failed: bool) -> tuple[str, str]:
        """(item state, attempt state) once an attempt ends with a completed report."""
        state = job["currentState"]
        if state in STOPPING:
            if failed:
                return "CANCELLED", "EXECUTION_STATE_FAILED"
            if state == "JOB_STATE_CANCELLING":
                return "CANCELLED", "EXECUTION_STATE_CANCELLED"
        if not failed:
            return "DONE", "EXECUTION_STATE_SUCCEEDED"
        return ("FAILED" if item["attempts"] >= self.config.max_attempts else "PENDING"), "EXECUTION_STATE_FAILED"

    # ---- leases lost: expiry and released workers -------------------------------------------

    def sweep(self) -> None:
        """Leases past their expiry are lost; a cheap range scan when there are none."""
        now = wire.format_time(wire.now())
        with self.store.read() as conn:
            overdue = item_rows.expired(conn, now)
        for item_id in overdue:
            with self.store.write() as conn:
                item = item_rows.get(conn, item_id)
                if item["state"] == "LEASED" and item["lease_expire"] < now:
                    self._lose(conn, item, f"its lease expired at {item['lease_expire']} with no status report", now)

    def release_worker(self, conn: Connection, job_id: str, worker_id: str, reason: str) -> None:
        """Put the worker's leases on the job back in the pool at once (it is broken, shut down
        or lost), inside the caller's transaction. Each counts as a failed attempt."""
        now = wire.format_time(wire.now())
        for held in item_rows.leased_by(conn, job_id, worker_id):
            item = item_rows.get(conn, held["id"])
            if item["state"] == "LEASED":  # not closed by an earlier loss that failed the job
                self._lose(conn, item, reason, now)

    def _lose(self, conn: Connection, item, why: str, now: str) -> None:
        job = job_rows.get(conn, item["job_id"])
        stopping = job["currentState"] in STOPPING
        if stopping:
            item_state = "CANCELLED"
        else:
            item_state = "FAILED" if item["attempts"] >= self.config.max_attempts else "PENDING"
            message_rows.insert_many(conn, job["id"], [message("WARNING", (
                f"Lost contact with worker {item['worker_id']} holding work item {item['id']} of stage "
                f"{item['stage_id']}: {why}. Attempt {item['attempts']} of at most "
                f"{self.config.max_attempts} failed."), now)])
        # The stages the lost attempt was running end with it; they stay on record with the item.
        runs = orjson.loads(item["last_report"]).get("stages") if item["last_report"] else None
        if runs:
            runs = pipeline_graph.end_runs(
                runs, "EXECUTION_STATE_CANCELLED" if stopping else "EXECUTION_STATE_FAILED", now)
            self._fused_stages(conn, job, None, runs, now, retry=item_state == "PENDING")
        item_rows.end_attempt(conn, item, item_state=item_state, attempt_state="EXECUTION_STATE_FAILED", now=now,
                              last_report={"worker": item["worker_id"], "stages": runs} if runs else None)
        self._after_attempt(conn, job, item, item_state, now, lost=True)

    # ---- what an ended attempt means for its stage and job ------------------------------------

    def _after_attempt(self, conn: Connection, job: dict, item, item_state: str, now: str, lost: bool) -> None:
        stage = item["stage_id"]
        if job["currentState"] in STOPPING:
            if not item_rows.stage_counts(conn, job["id"], stage).get("LEASED"):
                if _set_stage(job, stage, STOPPING[job["currentState"]], now):
                    job_rows.save(conn, job)
            self.jobs.settle(conn, job["id"])
        elif item_state == "DONE":
            changed = (set(item_rows.stage_counts(conn, job["id"], stage)) == {"DONE"}
                       and _set_stage(job, stage, "JOB_STATE_DONE", now))
            if set(item_rows.stage_counts(conn, job["id"])) == {"DONE"}:
                self.jobs.transition(conn, job, "JOB_STATE_DONE", "All work items have completed; the job is done.")
            elif changed:
                job_rows.save(conn, job)
        elif item_state == "FAILED":
            _set_stage(job, stage, "JOB_STATE_FAILED", now)
            self.jobs.transition(conn, job, "JOB_STATE_FAILED", _failure_text(
                conn, item, lost), "ERROR")

    # ---- helpers ------------------------------------------------------------------------------

    def _job(self, conn: Connection, project_id: str, location: str, job_id: str) -> dict:
        """The job, found by id alone where the project or location is the '-' wildcard."""
        job = job_rows.get(conn, job_id)
        project = job["projectId"] if job is not None and project_id == ANY else project_id
        return self.jobs.load(conn, project, None if location == ANY else location, job_id)

    def _lease_duration(self, requested: str | None) -> timedelta:
        """The requested lease, within (0, cap]; the configured default when none is asked for."""
        seconds = float(requested[:-1]) if requested else 0.0
        if seconds < 0:
            raise invalid(f"requestedLeaseDuration must not be negative, got {requested}.")
        cap = max(MAX_LEASE_SECONDS, self.config.lease_seconds)
        return timedelta(seconds=min(seconds or self.config.lease_seconds, cap))

    def _report_interval(self, lease: timedelta) -> str:
        # Twice per lease at least, so one lost report does not cost the lease.
        return wire.format_duration(min(self.config.report_status_seconds, lease.total_seconds() / 2))


def _worker_id(body: dict) -> str:
    worker_id = body.get("workerId", "")
    if not worker_id:
        raise invalid("workerId is required: name the worker (typically its VM's name), so the "
                      "service knows who holds each lease.")
    return worker_id


def _item_of(conn: Connection, job_id: str, work_item_id: str | None):
    if not work_item_id:
        raise invalid("Each of workItemStatuses needs the workItemId of the leased work item.")
    item = item_rows.get(conn, int(work_item_id)) if work_item_id.isdigit() and len(work_item_id) < 19 else None
    if item is None or item["job_id"] != job_id:
        raise not_found(f"Work item {work_item_id} was not found in job {job_id}.")
    return item


def _set_stage(job: dict, stage_id: str, state: str, now: str) -> bool:
    """Record the stage's state in the job's stageStates; False if it already was."""
    stages = job.setdefault("stageStates", [])
    for entry in stages:
        if entry["executionStageName"] == stage_id:
            if entry["executionStageState"] == state:
                return False
            entry |= {"executionStageState": state, "currentStateTime": now}
            return True
    stages.append({"executionStageName": stage_id, "executionStageState": state, "currentStateTime": now})
    return True


def _progress(status: dict) -> float | None:
    fraction = status.get("reportedProgress", {}).get("fractionConsumed")
    if fraction is None and "percentComplete" in status.get("progress", {}):
        fraction = status["progress"]["percentComplete"]
    return fraction


def _stop_message(job: dict) -> str:
    doing = "cancelled" if job["currentState"] == "JOB_STATE_CANCELLING" else "drained"
    return (f"Job {job['id']} is being {doing}: stop work on this item and report it completed.")


def _error_text(item, error: dict) -> str:
    return error.get("message") or f"Work item {item['id']} failed with status code {error.get('code', 2)}."


def _not_holder(item, worker_id: str, now: str) -> str:
    if item["state"] == "LEASED" and item["worker_id"] == worker_id:
        why = f"its lease expired at {item['lease_expire']}"
    elif item["state"] == "LEASED":
        why = "the lease was lost and the item is leased by another worker now"
    elif item["state"] == "PENDING":
        why = "the lease was lost and the item waits to be leased again"
    else:
        why = f"the item has ended ({item['state']})"
    return (f"Worker {worker_id} does not hold the lease on work item {item['id']}: {why}. Abandon "
            "the item without reporting on it again, and lease new work.")


def _unexpected_index(item, index: int, expected: int, last: dict | None) -> str:
    if last and last.get("index") == index:
        return (f"Report {index} on work item {item['id']} was already received with other contents; "
                f"a retried report must be sent unchanged. The next report must carry reportIndex {expected}.")
    return (f"Unexpected reportIndex {index} on work item {item['id']}: the service expects {expected}. "
            "Send each report with the nextReportIndex of the previous answer (the lease's "
            "initialReportIndex first), and retry a report unchanged.")


def _failure_text(conn: Connection, item, lost: bool) -> str:
    """Dataflow's own words for a work item that failed every attempt."""
    workers = item_rows.attempt_workers(conn, item["id"])
    n = item["attempts"]
    if lost:
        cause = (f"A work item was attempted {n} times without success. Each time the worker eventually "
                 "lost contact with the service. The work item was attempted on: "
                 + ",".join(f"\n  {w}" for w in workers))
    else:
        cause = (f"The job failed because a work item has failed {n} times. Look in previous log entries "
                 f"for the cause of each one of the {n} failures. For more information, see "
                 "https://cloud.google.com/dataflow/docs/guides/common-errors. The work item was "
                 "attempted on these workers: " + "".join(f"\n  {w}" for w in workers))
    return f"Workflow failed. Causes: {item['stage_id']} failed., {cause}"
