"""Work-item rows: what workers lease. Leasing and reporting live in service/work_items.py."""

from __future__ import annotations

import orjson
from sqlalchemy import func, select, tuple_
from sqlalchemy.engine import Connection

from headrace.store.schema import jobs, work_item_attempts, work_items

FIRST_STAGE = "S01"


def _item_body(job: dict) -> dict:
    """The work a job's first item carries: where the staged pipeline is and how to run it."""
    env = job.get("environment", {})
    options = env.get("sdkPipelineOptions", {})
    config = {
        "stageId": FIRST_STAGE,
        # A WorkItem does not say its region, and a worker that leased through the '-'
        # wildcard needs it to report and to send WorkerMessages.
        "location": job["location"],
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


# ---- the lease protocol (service/work_items.py) -------------------------------------------


def get(conn: Connection, item_id: int):
    return conn.execute(select(work_items).where(work_items.c.id == item_id)).mappings().first()


def next_pending(conn: Connection, *, project_id: str | None, location: str | None,
                 job_id: str | None, job_states: tuple[str, ...]):
    """The oldest unleased item of a job that may run, within the given scope (None: any)."""
    where = [work_items.c.state == "PENDING", jobs.c.current_state.in_(job_states)]
    for column, value in ((work_items.c.project_id, project_id), (work_items.c.location, location),
                          (work_items.c.job_id, job_id)):
        if value is not None:
            where.append(column == value)
    return conn.execute(select(work_items).join(jobs, jobs.c.id == work_items.c.job_id)
                        .where(*where).order_by(work_items.c.id).limit(1)).mappings().first()


def claim(conn: Connection, item, worker_id: str, expire: str, report_index: int, now: str) -> bool:
    """Lease `item` to `worker_id` and open its next attempt. False if someone else got it
    first (another API replica sharing the database)."""
    attempt = item["attempts"] + 1
    claimed = conn.execute(work_items.update().where(
        work_items.c.id == item["id"], work_items.c.state == "PENDING").values(
        state="LEASED", worker_id=worker_id, lease_expire=expire, attempts=attempt,
        next_report_index=report_index, last_report=None)).rowcount == 1
    if claimed:
        conn.execute(work_item_attempts.insert().values(
            work_item_id=item["id"], attempt=attempt, job_id=item["job_id"], stage_id=item["stage_id"],
            worker_id=worker_id, state="EXECUTION_STATE_RUNNING", start_time=now))
    return claimed


def renew(conn: Connection, item_id: int, expire: str, next_index: int, last_report: dict) -> None:
    conn.execute(work_items.update().where(work_items.c.id == item_id).values(
        lease_expire=expire, next_report_index=next_index, last_report=orjson.dumps(last_report).decode()))


def end_attempt(conn: Connection, item, *, item_state: str, attempt_state: str, now: str,
                next_index: int | None = None, last_report: dict | None = None) -> None:
    """End the item's current attempt; `item_state` PENDING puts the item back in the pool.
    `last_report` is kept for a completed report, which its sender may retry, and for the
    fused stages a lost attempt had run; the next claim clears it."""
    values = {"state": item_state, "lease_expire": None,
              "last_report": orjson.dumps(last_report).decode() if last_report else None}
    if item_state == "PENDING":
        values["worker_id"] = None
    if next_index is not None:
        values["next_report_index"] = next_index
    conn.execute(work_items.update().where(work_items.c.id == item["id"]).values(**values))
    conn.execute(work_item_attempts.update().where(
        work_item_attempts.c.work_item_id == item["id"], work_item_attempts.c.attempt == item["attempts"])
        .values(state=attempt_state, end_time=now))


def expired(conn: Connection, now: str, limit: int = 500) -> list[int]:
    """Leased items whose lease ran out: an index range scan on (state, lease_expire)."""
    return list(conn.execute(select(work_items.c.id).where(
        work_items.c.state == "LEASED", work_items.c.lease_expire < now)
        .order_by(work_items.c.lease_expire).limit(limit)).scalars())


def leased_by(conn: Connection, job_id: str, worker_id: str) -> list:
    return list(conn.execute(select(work_items).where(
        work_items.c.job_id == job_id, work_items.c.state == "LEASED",
        work_items.c.worker_id == worker_id).order_by(work_items.c.id)).mappings())


def stage_counts(conn: Connection, job_id: str, stage_id: str | None = None) -> dict[str, int]:
    """How many of the job's items (of one stage, or all) are in each state."""
    where = [work_items.c.job_id == job_id]
    if stage_id is not None:
        where.append(work_items.c.stage_id == stage_id)
    rows = conn.execute(select(work_items.c.state, func.count()).where(*where).group_by(work_items.c.state))
    return dict(rows.all())


def attempt_workers(conn: Connection, item_id: int) -> list[str]:
    return list(conn.execute(select(work_item_attempts.c.worker_id).where(
        work_item_attempts.c.work_item_id == item_id).order_by(work_item_attempts.c.attempt)).scalars())


# ---- execution details (service/execution_details.py) -------------------------------------


def stage_ids(conn: Connection, job_id: str, after: str | None, limit: int) -> list[str]:
    where = [work_items.c.job_id == job_id]
    if after is not None:
        where.append(work_items.c.stage_id > after)
    return list(conn.execute(select(work_items.c.stage_id).where(*where).distinct()
                             .order_by(work_items.c.stage_id).limit(limit)).scalars())


def stage_items(conn: Connection, job_id: str, stage_ids: list[str]) -> list:
    return list(conn.execute(select(work_items.c.id, work_items.c.stage_id, work_items.c.state,
                                    work_items.c.attempts, work_items.c.last_report)
                             .where(work_items.c.job_id == job_id, work_items.c.stage_id.in_(stage_ids))
                             .order_by(work_items.c.id)).mappings())


def stage_times(conn: Connection, job_id: str, stage_ids: list[str]) -> dict[str, tuple]:
    """stage -> (its first attempt's start, its last attempt's end)."""
    a = work_item_attempts.c
    rows = conn.execute(select(a.stage_id, func.min(a.start_time), func.max(a.end_time))
                        .where(a.job_id == job_id, a.stage_id.in_(stage_ids)).group_by(a.stage_id))
    return {stage: (start, end) for stage, start, end in rows}


def attempts_page(conn: Connection, job_id: str, stage_id: str, *, start: str | None, end: str | None,
                  after: list | None, limit: int) -> list:
    """A stage's attempts by worker, then start time; keyset pagination on that order."""
    a = work_item_attempts.c
    where = [a.job_id == job_id, a.stage_id == stage_id]
    if start:
        where.append(a.start_time >= start)
    if end:
        where.append(a.start_time < end)
    if after:
        where.append(tuple_(a.worker_id, a.start_time, a.work_item_id, a.attempt) > tuple_(*after))
    rows = conn.execute(select(work_item_attempts, work_items.c.state.label("item_state"),
                               work_items.c.attempts.label("item_attempts"), work_items.c.last_report)
                        .join(work_items, work_items.c.id == a.work_item_id).where(*where)
                        .order_by(a.worker_id, a.start_time, a.work_item_id, a.attempt).limit(limit))
    return list(rows.mappings())
