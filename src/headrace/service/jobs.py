"""Jobs: creation rules, the state machine, views and listing.

Every change of a job's state happens in one transaction with what goes with it (job
messages, work items), through `transition`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from headrace import wire
from headrace.config import Config
from headrace.errors import ApiError, invalid, not_found, precondition
from headrace.service import pages, pipeline_graph
from headrace.storage import Storage
from headrace.store import Store
from headrace.store import jobs as job_rows
from headrace.store import messages as message_rows
from headrace.store import work_items as item_rows
from headrace.store.jobs import TERMINAL

NAME = re.compile(r"^[a-z]([-a-z0-9]{0,1022}[a-z0-9])?$")

# Fields of the summary view (what jobs.list returns for each job).
SUMMARY_FIELDS = ("id", "projectId", "name", "type", "currentState", "currentStateTime",
                  "requestedState", "createTime", "startTime", "location", "labels",
                  "clientRequestId", "replaceJobId", "replacedByJobId", "createdFromSnapshotId",
                  "jobMetadata", "satisfiesPzs", "satisfiesPzi", "runtimeUpdatableParams",
                  "serviceResources")
DESCRIPTION_FIELDS = SUMMARY_FIELDS + ("environment", "steps", "stepsLocation", "pipelineDescription")
# Set by the service only; a client that sends them on create has them ignored, as Dataflow does.
SERVICE_FIELDS = ("id", "projectId", "location", "createTime", "currentState", "currentStateTime",
                  "startTime", "replacedByJobId", "stageStates", "executionInfo")
UPDATABLE = {"labels": "labels", "runtime_updatable_params": "runtimeUpdatableParams"}


def view(job: dict, name: str | None) -> dict:
    if name == "JOB_VIEW_ALL":
        return job
    keep = DESCRIPTION_FIELDS if name == "JOB_VIEW_DESCRIPTION" else SUMMARY_FIELDS
    return {k: job[k] for k in keep if k in job}


def new_job_id(moment) -> str:
    return moment.strftime("%Y-%m-%d_%H_%M_%S-") + str(secrets.randbelow(10**19 - 10**18) + 10**18)


def message(importance: str, text: str, time: str | None = None) -> dict:
    return {"time": time or wire.format_time(wire.now()),
            "messageImportance": f"JOB_MESSAGE_{importance}", "messageText": text}


@dataclass
class Jobs:
    config: Config
    store: Store
    storage: Storage  # where Beam staged jobs' pipelines

    # ---- reads ---------------------------------------------------------------

    def load(self, conn: Connection, project_id: str, location: str, job_id: str) -> dict:
        job = job_rows.get(conn, job_id)
        if job is None or job["projectId"] != project_id or (location and job["location"] != location):
            raise not_found(f"Requested entity was not found. (Job {job_id} in project {project_id}, "
                            f"location {location or 'any'}).")
        return job

    def get(self, project_id: str, location: str, job_id: str, view_name: str | None = None) -> dict:
        with self.store.read() as conn:
            return view(self.load(conn, project_id, location, job_id), view_name)

    def list(self, project_id: str, location: str | None, params: dict) -> dict:
        limit = pages.size(params.get("pageSize"), self.config.page_size, self.config.max_page_size)
        query = {k: v for k, v in params.items() if k not in ("pageToken", "pageSize")}
        query |= {"projectId": project_id, "location": location}
        before = pages.decode(params.get("pageToken"), query)
        terminal = {"TERMINATED": True, "ACTIVE": False}.get(params.get("filter", "ALL"))
        with self.store.read() as conn:
            rows = job_rows.page(
                conn, project_id=project_id, location=location, terminal=terminal,
                name=params.get("name"),
                created=(params.get("createTimeRange.startTime"), params.get("createTimeRange.endTime")),
                terminated=(params.get("terminationTimeRange.startTime"), params.get("terminationTimeRange.endTime")),
                before_seq=before, limit=limit + 1)
        out: dict = {}
        if rows[:limit]:
            out["jobs"] = [view(job, params.get("view")) for _, job in rows[:limit]]
        if len(rows) > limit:
            out["nextPageToken"] = pages.encode(rows[limit - 1][0], query)
        return out

    # ---- create ----------------------------------------------------------------

    def create(self, project_id: str, location: str, body: dict, replace_job_id: str | None = None,
               view_name: str | None = None, initial_state: str = "JOB_STATE_PENDING") -> dict:
        name = body.get("name", "")
        if not NAME.match(name):
            raise invalid(f"(Job name) The job name {name!r} is invalid: it must match "
                          "[a-z]([-a-z0-9]{0,1022}[a-z0-9])?")
        replace_job_id = replace_job_id or body.get("replaceJobId")
        graph = pipeline_graph.from_staged(body, self.storage)  # outside the write lock: it reads a file
        now = wire.format_time(wire.now())
        job = {k: v for k, v in (body | graph).items() if k not in SERVICE_FIELDS}
        job |= {"id": new_job_id(wire.now()), "projectId": project_id, "location": location,
                "name": name, "type": body.get("type", "JOB_TYPE_BATCH"), "createTime": now,
                "startTime": now, "currentState": initial_state, "currentStateTime": now}
        if job["type"] == "JOB_TYPE_UNKNOWN":
            job["type"] = "JOB_TYPE_BATCH"
        with self.store.write() as conn:
            existing = job_rows.active_named(conn, project_id, location, name)
            if replace_job_id:
                job["replaceJobId"] = replace_job_id
                self._replace(conn, project_id, location, replace_job_id, job)
            elif existing is not None:
                if body.get("clientRequestId") and existing.get("clientRequestId") == body["clientRequestId"]:
                    return view(existing, view_name)  # an idempotent retry of the same submission
                raise ApiError("ALREADY_EXISTS", (
                    f"(Job name) There is already an active job named {name} with id: {existing['id']}. "
                    "If you want to submit a second job, try again by setting a different name."))
            job_rows.insert(conn, job)
            if initial_state != "JOB_STATE_QUEUED":  # a queued job gets its work when attached
                item_rows.create_for_job(conn, job, now)
            message_rows.insert_many(conn, job["id"], [message("BASIC", f"Job {job['id']} created.", now)])
        return view(job, view_name)

    def attach(self, job_id: str, built: dict) -> None:
        """Give a QUEUED job (a flex template launch) the pipeline its launcher built, and its work."""
        built = built | pipeline_graph.from_staged(built, self.storage)
        with self.store.write() as conn:
            job = job_rows.get(conn, job_id)
            if job is None or job["currentState"] != "JOB_STATE_QUEUED":
                return  # cancelled (or gone) while the launcher ran: nothing to run
            for key in ("type", "steps", "stepsLocation", "environment", "pipelineDescription"):
                if key in built:
                    job[key] = built[key]
            now = wire.format_time(wire.now())
            job["startTime"] = now
            item_rows.create_for_job(conn, job, now)
            self.transition(conn, job, "JOB_STATE_PENDING", "The flex template launcher built the job; it is starting.")

    def _replace(self, conn: Connection, project_id: str, location: str, old_id: str, new_job: dict) -> None:
        old = self.load(conn, project_id, location, old_id)
        if old["currentState"] in TERMINAL:
            raise precondition(f"Could not update job {old_id}: the job has terminated in state "
                               f"{old['currentState']}; only an active job can be updated.")
        if old["name"] != new_job["name"]:
            raise invalid(f"The replacement job's name {new_job['name']!r} must match the name of job "
                          f"{old_id} ({old['name']!r}).")
        old["replacedByJobId"] = new_job["id"]
        self.transition(conn, old, "JOB_STATE_UPDATED",
                        f"Job {old_id} was updated and replaced by job {new_job['id']}.")

    # ---- update ----------------------------------------------------------------

    def update(self, project_id: str, location: str, job_id: str, body: dict, update_mask: str | None) -> dict:
        with self.store.write() as conn:
            job = self.load(conn, project_id, location, job_id)
            if update_mask:
                self._apply_mask(job, body, update_mask)
                job_rows.save(conn, job)
            requested = body.get("requestedState")
            if requested and requested != "JOB_STATE_UNKNOWN":
                self._request_state(conn, job, requested)
            elif not update_mask:
                raise invalid("Nothing to update: set requestedState, or name the fields to change "
                              "(labels, runtime_updatable_params) in updateMask.")
        return view(job, None)

    @staticmethod
    def _apply_mask(job: dict, body: dict, mask: str) -> None:
        for path in filter(None, (p.strip() for p in mask.split(","))):
            head, _, rest = path.partition(".")
            snake = re.sub(r"(?<!^)(?=[A-Z])", "_", head).lower()
            field = UPDATABLE.get(snake)
            if field is None:
                raise invalid(f"updateMask path {path!r} cannot be updated; updatable fields are "
                              "labels and runtime_updatable_params.")
            if not rest:
                if field in body:
                    job[field] = body[field]
                else:
                    job.pop(field, None)
                continue
            sub = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), rest)
            source = body.get(field, {})
            target = job.setdefault(field, {})
            if sub in source or rest in source:
                target[sub] = source.get(sub, source.get(rest))
            else:
                target.pop(sub, None)

    def _request_state(self, conn: Connection, job: dict, requested: str) -> None:
        state = job["currentState"]
        if state in TERMINAL:
            raise precondition(f"Workflow modification failed. Causes: (Job {job['id']}) The job has "
                               f"terminated in state {state}; it can no longer be changed to {requested}.")
        streaming = job.get("type") == "JOB_TYPE_STREAMING"
        if requested == "JOB_STATE_CANCELLED":
            job["requestedState"] = requested
            self.transition(conn, job, "JOB_STATE_CANCELLING", "Cancel request is committed for the job.")
        elif requested in ("JOB_STATE_DRAINING", "JOB_STATE_DRAINED"):
            if not streaming:
                raise precondition(f"Workflow modification failed. Causes: (Job {job['id']}) Draining is "
                                   "only supported for streaming jobs; cancel a batch job instead.")
            job["requestedState"] = "JOB_STATE_DRAINED"
            self.transition(conn, job, "JOB_STATE_DRAINING", "Drain request is committed for the job.")
        elif requested == "JOB_STATE_DONE":
            job["requestedState"] = requested
            self.transition(conn, job, "JOB_STATE_DONE", "The job was marked done on request.")
        elif requested == "JOB_STATE_RUNNING":
            job["requestedState"] = requested
            job_rows.save(conn, job)
        else:
            raise invalid(f"requestedState {requested} cannot be requested; use JOB_STATE_CANCELLED, "
                          "JOB_STATE_DRAINED (streaming jobs) or JOB_STATE_DONE.")

    # ---- the state machine -------------------------------------------------------

    def transition(self, conn: Connection, job: dict, state: str, text: str | None = None,
                   importance: str = "BASIC") -> None:
        """Move `job` to `state`, saving it with a job message and its work items' fate."""
        now = wire.format_time(wire.now())
        job["currentState"] = state
        job["currentStateTime"] = now
        if state in TERMINAL:
            item_rows.close_for_job(conn, job["id"], state, now)
        elif state in ("JOB_STATE_CANCELLING", "JOB_STATE_DRAINING"):
            item_rows.cancel_pending(conn, job["id"])
        job_rows.save(conn, job)
        if text:
            message_rows.insert_many(conn, job["id"], [message(importance, text, now)])

    def settle(self, conn: Connection, job_id: str) -> None:
        """Finish a CANCELLING/DRAINING job whose work has all stopped; called by the sweeper
        and whenever a work item ends."""
        job = job_rows.get(conn, job_id)
        if job is None or job["currentState"] not in ("JOB_STATE_CANCELLING", "JOB_STATE_DRAINING"):
            return
        if item_rows.count_leased(conn, job_id):
            return
        if job["currentState"] == "JOB_STATE_CANCELLING":
            self.transition(conn, job, "JOB_STATE_CANCELLED", f"Job {job_id} was cancelled.")
        else:
            self.transition(conn, job, "JOB_STATE_DRAINED", f"Job {job_id} was drained.")

    def sweep(self) -> None:
        with self.store.read() as conn:
            stopping = job_rows.ids_in_states(conn, ["JOB_STATE_CANCELLING", "JOB_STATE_DRAINING"])
        for job_id in stopping:
            with self.store.write() as conn:
                self.settle(conn, job_id)
