"""jobs.getExecutionDetails and jobs.stages.getExecutionDetails, built from work items and
their attempts: a stage is as far along as its items, and every attempt names its worker.

Besides the work items' own stages (S01), a job has the fused stages (F0, F1, ...) its worker
reports running inside an item: each item keeps its latest attempt's runs of them (state,
start, end) with its last report (service/work_items.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from headrace.config import Config
from headrace.errors import not_found
from headrace.service import pages
from headrace.service.jobs import Jobs
from headrace.store import Store
from headrace.store import work_items as item_rows

ENDED = ("EXECUTION_STATE_SUCCEEDED", "EXECUTION_STATE_FAILED", "EXECUTION_STATE_CANCELLED")
ALL_STAGES = 10_000  # a job has one work item today; pages of stages are cut here, not in SQL
# A fused stage's state over its runs: the first of these that any run is in.
PRECEDENCE = ("FAILED", "RUNNING", "CANCELLED", "NOT_STARTED", "SUCCEEDED")


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
            item_stages = item_rows.stage_ids(conn, job_id, None, ALL_STAGES)
            items = item_rows.stage_items(conn, job_id, item_stages)
            times = item_rows.stage_times(conn, job_id, item_stages)
        fused = _fused_runs(items)
        ids = sorted(set(item_stages) | set(fused), key=_order)
        ids = [i for i in ids if after is None or _order(i) > _order(after)][:limit + 1]
        page = ids[:limit]
        out: dict = {"stages": [
            _summary(stage, [i for i in items if i["stage_id"] == stage], times.get(stage))
            if stage in item_stages else _fused_summary(stage, fused[stage]) for stage in page]}
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
            if item_rows.stage_counts(conn, job_id, stage_id):
                rows = item_rows.attempts_page(conn, job_id, stage_id, after=after, limit=limit + 1, **window)
            else:
                item_stages = item_rows.stage_ids(conn, job_id, None, ALL_STAGES)
                fused = _fused_runs(item_rows.stage_items(conn, job_id, item_stages))
                if stage_id not in fused:
                    known = ", ".join(sorted(set(item_stages) | set(fused), key=_order)[:50]) or "none yet"
                    raise not_found(f"Stage {stage_id} was not found in job {job_id}. Its stages: {known}.")
                rows = _fused_attempts(fused[stage_id], after=after, limit=limit + 1, **window)
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


def _order(stage_id: str) -> tuple:
    """Stage ids in name, then number order: F2 before F10, fused stages before S01."""
    match = re.fullmatch(r"(\D*)(\d+)", stage_id)
    return (match.group(1), int(match.group(2)), "") if match else (stage_id, -1, stage_id)


def _fused_runs(items) -> dict[str, list[dict]]:
    """stage id -> the runs of it that items' latest attempts reported, each with its item,
    attempt and worker."""
    fused: dict[str, list[dict]] = {}
    for item in items:
        last = orjson.loads(item["last_report"]) if item["last_report"] else {}
        for stage_id, run in (last.get("stages") or {}).items():
            fused.setdefault(stage_id, []).append(run | {
                "work_item_id": item["id"], "attempt": item["attempts"], "worker_id": last.get("worker", ""),
                "item_state": item["state"]})
    return fused


def _fused_summary(stage_id: str, runs: list[dict]) -> dict:
    # A run that failed while its item waits for a retry leaves the stage running.
    states = {"RUNNING" if r["state"] == "FAILED" and r["item_state"] in ("PENDING", "LEASED") else r["state"]
              for r in runs}
    state = next(s for s in PRECEDENCE if s in states)
    starts = [r["start"] for r in runs if r.get("start")]
    ends = [r["end"] for r in runs if r.get("end")]
    done = sum(r["state"] == "SUCCEEDED" for r in runs) / len(runs)
    return {"stageId": stage_id, "state": f"EXECUTION_STATE_{state}", "startTime": min(starts, default=None),
            "endTime": max(ends) if ends and f"EXECUTION_STATE_{state}" in ENDED else None,
            "progress": {"currentProgress": done}}


def _fused_attempts(runs: list[dict], *, start: str | None, end: str | None, after: list | None,
                    limit: int) -> list[dict]:
    """A fused stage's runs as attempt rows, in the order and pages of attempts_page."""
    rows = [{"worker_id": r["worker_id"], "start_time": r["start"], "end_time": r.get("end"),
             "work_item_id": r["work_item_id"], "attempt": r["attempt"], "item_attempts": r["attempt"],
             "state": f"EXECUTION_STATE_{r['state']}", "last_report": None}
            for r in runs if r.get("start") and (not start or r["start"] >= start) and (not end or r["start"] < end)]
    key = lambda r: (r["worker_id"], r["start_time"], r["work_item_id"], r["attempt"])  # noqa: E731
    return [r for r in sorted(rows, key=key) if after is None or list(key(r)) > list(after)][:limit]


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
