"""Work-item rows: what workers lease. Leasing and reporting live in service/work_items.py."""

from __future__ import annotations

import orjson
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from headrace.store.schema import work_item_attempts, work_items

FIRST_STAGE = "S01"


def _item_body(job: dict) -> dict:
    """The work a job's first item carries: where the staged pipeline is and how to run it."""
    env = job.get("environment", {})
    options = env.get("sdkPipelineOptions", {})
    config = {
        "stageId": FIRST_STAGE,
        "jobName": job["name"],
        "jobType": job["type"],
        "pipelineUrl": options.get("options", {}).get("pipelineUrl") or env.get("pipelineUrl"),
        "sdkPipelineOptions": options,
    }
    body = {"jobId": job["id"], "projectId": job["projectId"],
            "configuration": orjson.dumps(config).decode()}
    packages = [p for wp in env.get("workerPools", []) for p in wp.get("packages", [])]
    if packages:
        body["packages"] = packages
    return body


def create_for_job(conn: Connection, job: dict, now: str) -> int:
    result = conn.execute(work_items.insert().values(
        job_id=job["id"], project_id=job["projectId"], location=job["location"],
        stage_id=FIRST_STAGE, state="PENDING", attempts=0, next_report_index=0,
        create_time=now, body=orjson.dumps(_item_body(job)).decode()))
    return result.inserted_primary_key[0]


def cancel_pending(conn: Connection, job_id: str) -> None:
    """Items nobody holds yet will never run; held ones learn of it on their next report."""
    conn.execute(work_items.update().where(work_items.c.job_id == job_id, work_items.c.state == "PENDING")
                 .values(state="CANCELLED"))


def close_for_job(conn: Connection, job_id: str, job_state: str, now: str) -> None:
    """The job ended: no item of it stays leasable; open attempts end with it."""
    final = "DONE" if job_state == "JOB_STATE_DONE" else "CANCELLED"
    conn.execute(work_items.update().where(work_items.c.job_id == job_id,
                                           work_items.c.state.in_(("PENDING", "LEASED")))
                 .values(state=final, lease_expire=None))
    conn.execute(work_item_attempts.update().where(work_item_attempts.c.job_id == job_id,
                                                   work_item_attempts.c.end_time.is_(None))
                 .values(state="EXECUTION_STATE_CANCELLED" if final == "CANCELLED" else "EXECUTION_STATE_SUCCEEDED",
                         end_time=now))


def count_leased(conn: Connection, job_id: str) -> int:
    return conn.execute(select(func.count()).select_from(work_items).where(
        work_items.c.job_id == job_id, work_items.c.state == "LEASED")).scalar_one()
