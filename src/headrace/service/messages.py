"""jobs.messages.list: job messages and autoscaling events in a time window, oldest first."""

from __future__ import annotations

from dataclasses import dataclass

from headrace.config import Config
from headrace.service import pages
from headrace.service.jobs import Jobs
from headrace.store import Store
from headrace.store import messages as message_rows


@dataclass
class Messages:
    config: Config
    store: Store
    jobs: Jobs

    def list(self, project_id: str, location: str, job_id: str, params: dict) -> dict:
        limit = pages.size(params.get("pageSize"), self.config.page_size, self.config.max_page_size)
        query = {k: v for k, v in params.items() if k not in ("pageToken", "pageSize")}
        query |= {"projectId": project_id, "location": location, "jobId": job_id}
        position = pages.decode(params.get("pageToken"), query) or {}
        window = {"start": params.get("startTime"), "end": params.get("endTime")}
        rank = message_rows.RANK.get(params.get("minimumImportance", ""), 0)
        with self.store.read() as conn:
            self.jobs.load(conn, project_id, location, job_id)
            msgs = message_rows.page(conn, job_id, min_rank=rank, after=_after(position.get("m")),
                                     limit=limit + 1, **window)
            events = message_rows.events(conn, job_id, after=_after(position.get("e")),
                                         limit=limit + 1, **window)
        out: dict = {}
        if msgs[:limit]:
            out["jobMessages"] = [m for _, _, m in msgs[:limit]]
        if events[:limit]:
            out["autoscalingEvents"] = [e for _, _, e in events[:limit]]
        if len(msgs) > limit or len(events) > limit:
            # Each list resumes after its own last row; one that is finished stays finished.
            out["nextPageToken"] = pages.encode({
                "m": _last(msgs, limit, position.get("m")),
                "e": _last(events, limit, position.get("e"))}, query)
        return out


def _after(position):
    return tuple(position) if position else None


def _last(rows, limit, previous):
    if not rows:
        return previous
    time, seq, _ = rows[min(len(rows), limit) - 1]
    return [time, seq]
