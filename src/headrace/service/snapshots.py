"""Snapshots of streaming jobs: the records, their lifecycle and their ttl.

A snapshot is taken of a RUNNING streaming job and moves PENDING → RUNNING → READY, one step
per sweep, or to FAILED if its job terminates first. It disappears once creationTime + ttl
has passed. No pipeline state is captured yet: a READY snapshot is a record only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from headrace import wire
from headrace.config import Config
from headrace.errors import invalid, not_found, precondition
from headrace.service.jobs import Jobs, message
from headrace.store import Store
from headrace.store import jobs as job_rows
from headrace.store import messages as message_rows
from headrace.store import snapshots as snapshot_rows
from headrace.store.jobs import TERMINAL

DEFAULT_TTL = timedelta(days=7)
NEXT_STATE = {"PENDING": "RUNNING", "RUNNING": "READY"}


@dataclass
class Snapshots:
    config: Config
    store: Store
    jobs: Jobs

    def create(self, project_id: str, location: str, job_id: str, body: dict) -> dict:
        """jobs.snapshot."""
        created = wire.now()
        ttl = _ttl(body.get("ttl"))
        try:
            expire_time = wire.format_time(created + ttl)
        except OverflowError:
            raise invalid(f"ttl {body['ttl']} is too long: the snapshot would expire after the "
                          "year 9999.") from None
        with self.store.write() as conn:
            job = self.jobs.load(conn, project_id, location, job_id)
            if job.get("type") != "JOB_TYPE_STREAMING":
                raise precondition(f"Job {job_id} is a batch job; only streaming jobs can be snapshotted.")
            if job["currentState"] != "JOB_STATE_RUNNING":
                raise precondition(f"Job {job_id} is in state {job['currentState']}; only a "
                                   "JOB_STATE_RUNNING streaming job can be snapshotted.")
            snap = {"id": str(uuid.uuid4()), "projectId": project_id, "sourceJobId": job_id,
                    "creationTime": wire.format_time(created), "ttl": wire.format_duration(ttl),
                    "state": "PENDING", "region": job["location"]}
            if body.get("description"):
                snap["description"] = body["description"]
            snapshot_rows.insert(conn, snap, expire_time)
            message_rows.insert_many(conn, job_id, [message(
                "BASIC", f"Snapshot {snap['id']} of job {job_id} requested.", snap["creationTime"])])
        return snap

    def get(self, project_id: str, location: str, snapshot_id: str) -> dict:
        with self.store.read() as conn:
            return self._load(conn, project_id, location, snapshot_id)

    def list(self, project_id: str, location: str, job_id: str | None = None) -> dict:
        with self.store.read() as conn:
            return {"snapshots": snapshot_rows.list_(conn, project_id, location, job_id, _now())}

    def list_for_job(self, project_id: str, location: str, job_id: str) -> dict:
        """jobs.snapshots.list: like list, but the job must exist."""
        with self.store.read() as conn:
            self.jobs.load(conn, project_id, location, job_id)
            return {"snapshots": snapshot_rows.list_(conn, project_id, location, job_id, _now())}

    def delete(self, project_id: str, location: str, snapshot_id: str | None) -> dict:
        if not snapshot_id:
            raise invalid("snapshotId is required: name the snapshot to delete.")
        with self.store.write() as conn:
            self._load(conn, project_id, location, snapshot_id)
            snapshot_rows.delete(conn, snapshot_id)
        return {}

    def _load(self, conn, project_id: str, location: str, snapshot_id: str) -> dict:
        snap = snapshot_rows.get(conn, snapshot_id, _now())
        if snap is None or snap["projectId"] != project_id or snap["region"] != location:
            raise not_found(f"Snapshot {snapshot_id} was not found in project {project_id}, "
                            f"location {location}; it may have expired or been deleted.")
        return snap

    # ---- lifecycle ---------------------------------------------------------------------

    def sweep(self) -> None:
        """Expire snapshots past their ttl, then move each unfinished one a step, each change
        in its own transaction."""
        with self.store.write() as conn:
            snapshot_rows.delete_expired(conn, _now())
        with self.store.read() as conn:
            unfinished = snapshot_rows.ids_in_states(conn, tuple(NEXT_STATE), _now())
        for snapshot_id in unfinished:
            with self.store.write() as conn:
                self._advance(conn, snapshot_id)

    def _advance(self, conn, snapshot_id: str) -> None:
        now = _now()
        snap = snapshot_rows.get(conn, snapshot_id, now)
        if snap is None or snap["state"] not in NEXT_STATE:
            return  # deleted or expired meanwhile
        job = job_rows.get(conn, snap["sourceJobId"])
        note = None
        if job is None or job["currentState"] in TERMINAL:
            snap["state"] = "FAILED"
            ended = job["currentState"] if job else "JOB_STATE_UNKNOWN"
            note = message("WARNING", f"Snapshot {snapshot_id} failed: job {snap['sourceJobId']} "
                           f"terminated in {ended} before the snapshot was ready.", now)
        else:
            snap["state"] = NEXT_STATE[snap["state"]]
            if snap["state"] == "READY":
                snap["diskSizeBytes"] = "0"  # no pipeline state is captured yet
                note = message("BASIC", f"Snapshot {snapshot_id} is ready.", now)
        snapshot_rows.save(conn, snap)
        if note:
            message_rows.insert_many(conn, snap["sourceJobId"], [note])


def _ttl(text: str | None) -> timedelta:
    if not text:
        return DEFAULT_TTL
    try:
        ttl = wire.parse_duration(text)
    except OverflowError:
        raise invalid(f"ttl {text} is too long.") from None
    if ttl <= timedelta(0):
        raise invalid(f"ttl must be positive, got {text}; for example \"86400s\" for a day.")
    return ttl


def _now() -> str:
    return wire.format_time(wire.now())
