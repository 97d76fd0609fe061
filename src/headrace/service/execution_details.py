"""jobs.getExecutionDetails and jobs.stages.getExecutionDetails, built from work items and
their attempts: a stage is as far along as its items, and every attempt names its worker."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from headrace.config import Config
from headrace.errors import not_found
from headrace.service import pages
from headrace.service.jobs import Jobs
from headrace.store import Store
from headrace.store import work_items as item_rows

ENDED = ("EXECUTION_STATE_SUCCEEDED", "EXECUTION_STATE_FAILED", "EXECUTION_STATE_CANCELLED")


@dataclass
class ExecutionDetails:
    config: Config
    store: Store
    jobs: Jobs

    def job(self, project_id: str, location: str, job_id: str, params: dict) -> dict:
        """One StageSummary per stage, in stage id order; a page holds up to pageSize stages."""
        limit = pages.size(params.get("pageSize"), self.config.page_size, self.config.max_page_size)
        query = {"projectId": project_id, "location": location, "jobId": job_id}
        after = pages.decode(params.get("pageToken"), query)
        with self.store.read() as conn:
            self.jobs.load(conn, project_id, location, job_id)
            ids = item_rows.stage_ids(conn, job_id, after, limit + 1)
            page = ids[:limit]
            items = item_rows.stage_items(conn, job_id, page)
            times = item_rows.stage_times(conn, job_id, page)
        out: dict = {"stages": [_summary(stage, [i for i in items if i["stage_id"] == stage], times.get(stage))
                                for stage in page]}
        if len(ids) > limit:
            out["nextPageToken"] = pages.encode(page[-1], query)
        return out

    def stage(self, project_id: str, location: str, job_id: str, stage_id: str, params: dict) -> dict:
        """The stage's attempts grouped by worker, each worker's sorted by start time. pageSize
        counts attempts, so one worker's list may continue on the next page."""
        limit = pages.size(params.get("pageSize"), self.config.page_size, self.config.max_page_size)
        window = {"start": params.get("startTime"), "end": params.get("endTime")}
        query = {"projectId": project_id, "location": location, "jobId": job_id, "stageId": stage_id} | window
        after = pages.decode(params.get("pageToken"), query)
        with self.store.read() as conn:
            self.jobs.load(conn, project_id, location, job_id)
            if not item_rows.stage_counts(conn, job_id, stage_id):
                known = ", ".join(item_rows.stage_ids(conn, job_id, None, 20)) or "none yet"
                raise not_found(f"Stage {stage_id} was not found in job {job_id}. Its stages: {known}.")
            rows = item_rows.attempts_page(conn, job_id, stage_id, after=after, limit=limit + 1, **window)
        workers: list[dict] = []
        for row in rows[:limit]:
            if not workers or workers[-1]["workerName"] != row["worker_id"]:
                workers.append({"workerName": row["worker_id"], "workItems": []})
            workers[-1]["workItems"].append(_attempt(row))
        out: dict = {"workers": workers}
        if len(rows) > limit:
            last = rows[limit - 1]
            out["nextPageToken"] = pages.encode(
                [last["worker_id"], last["start_time"], last["work_item_id"], last["attempt"]], query)
        return out


def _summary(stage_id: str, items: list, times: tuple | None) -> dict:
    start, end = times or (None, None)
    states = {i["state"] for i in items}
    if "FAILED" in states:
        state = "EXECUTION_STATE_FAILED"
    elif "LEASED" in states or ("PENDING" in states and start):  # running, or waiting for a retry
        state = "EXECUTION_STATE_RUNNING"
    elif "PENDING" in states:
        state = "EXECUTION_STATE_NOT_STARTED"
    elif "CANCELLED" in states:
        state = "EXECUTION_STATE_CANCELLED"
    else:
        state = "EXECUTION_STATE_SUCCEEDED"
    done = sum(1.0 if i["state"] == "DONE" else _reported(i) if i["state"] == "LEASED" else 0.0 for i in items)
    return {"stageId": stage_id, "state": state, "startTime": start,
            "endTime": end if state in ENDED else None,
            "progress": {"currentProgress": done / len(items)}}


def _attempt(row) -> dict:
    detail = {"taskId": str(row["work_item_id"]), "attemptId": str(row["attempt"]),
              "startTime": row["start_time"], "endTime": row["end_time"], "state": row["state"]}
    if row["state"] == "EXECUTION_STATE_SUCCEEDED":
        detail["progress"] = {"currentProgress": 1.0}
    elif row["end_time"] is None and row["attempt"] == row["item_attempts"] and _reported(row):
        detail["progress"] = {"currentProgress": _reported(row)}
    return detail


def _reported(row) -> float:
    """The fraction of the item its current attempt last reported consumed."""
    last = orjson.loads(row["last_report"]) if row["last_report"] else {}
    return float(last.get("progress") or 0.0)
