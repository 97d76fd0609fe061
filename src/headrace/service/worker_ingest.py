"""One WorkerMessages request applied to the worker registry.

`Ingest` holds the registry rows of the workers a request names (read once per request),
applies every message to them in order and collects what must be written: rows, resource
samples, job messages and lease releases. It does no I/O itself, so the service writes all
of it with one executemany per table inside one transaction.

Messages may arrive out of order (the seed says so of lifecycle events; retries reorder the
rest), so each "latest" value is replaced only by a message with a later `time`, and a
state change only by a message newer than the one that set the current state.
"""

from __future__ import annotations

import functools

import orjson

from headrace import wire
from headrace.service import worker_codes
from headrace.service.jobs import message

MAX_CONTAINERS = 20  # lifecycle groups kept per worker (each container/VM restart adds one)
MAX_EVENTS = 50  # events kept per lifecycle group
READY_EVENT = "SDK_INSTALL_FINISH"  # the last event of a container's start-up

# Where a released worker's work goes, said the same way in every message.
_RELEASED = "Any work it held was released for retry."


@functools.lru_cache(maxsize=256)  # workers repeat the same few intervals
def _seconds(duration: str | None) -> float:
    try:
        return wire.parse_duration(duration).total_seconds() if duration else 0.0
    except ValueError:
        return 0.0


@functools.lru_cache(maxsize=256)
def _duration(seconds: float) -> str:
    return wire.format_duration(seconds)


def _newer(latest: dict | None, time: str, key: str = "time") -> bool:
    return latest is None or time >= latest.get(key, "")


class Ingest:
    def __init__(self, now: str, assigned_interval: float, known: dict[tuple[str, str], dict]):
        self.now = now
        self.assigned = wire.format_duration(assigned_interval)
        self.assigned_seconds = assigned_interval
        self.workers = known  # (job id, worker id) -> registry row body
        self.new: list[dict] = []
        self.changed: dict[tuple[str, str], dict] = {}
        self.samples: list[tuple] = []  # rows for store.workers.add_samples
        self.job_messages: dict[str, list[dict]] = {}
        self.releases: list[tuple[str, str, str]] = []

    def rows(self) -> tuple[list[dict], list[dict]]:
        """(rows to insert, existing rows to update)."""
        fresh = {(w["jobId"], w["workerId"]) for w in self.new}
        return self.new, [w for key, w in self.changed.items() if key not in fresh]

    # ---- per message -------------------------------------------------------------

    def apply(self, key: tuple[str, str], msg: dict) -> dict:
        """Apply one WorkerMessage; returns its WorkerMessageResponse."""
        worker = self.workers.get(key) or self._register(key)
        self.changed[key] = worker
        time = msg.get("time") or self.now
        worker["lastSeen"] = self.now
        labels = msg["labels"]
        if time >= worker.get("lastMessageTime", ""):
            worker["lastMessageTime"] = time
            worker["labels"] = labels
        if "CONTAINER_ID" in labels:
            worker.setdefault("containers", {})[labels["CONTAINER_ID"]] = labels.get("CONTAINER_TYPE", "")
        out = {}
        for field, value in msg.items():
            kind = _KINDS.get(field)
            if kind is not None:
                answer = kind[1](self, worker, value, time)
                if kind[0]:
                    out[kind[0]] = answer
        return out

    def _register(self, key: tuple[str, str]) -> dict:
        worker = {"jobId": key[0], "workerId": key[1], "state": "HEALTHY", "stateTime": self.now,
                  "stateEventTime": "", "firstSeen": self.now, "lastSeen": self.now}
        self.workers[key] = worker
        self.new.append(worker)
        return worker

    def _say(self, worker: dict, importance: str, text: str, time: str) -> None:
        self.job_messages.setdefault(worker["jobId"], []).append(message(importance, text, time))

    def _set_state(self, worker: dict, state: str, time: str, reason: str | None) -> bool | None:
        """None if a newer message already decided the state; else whether it changed."""
        if time < worker["stateEventTime"]:
            return None
        worker["stateEventTime"] = time
        if worker["state"] == state:
            return False
        worker["previousState"] = worker["state"]
        worker["state"], worker["stateTime"] = state, self.now
        if reason:
            worker["stateReason"] = reason
        else:
            worker.pop("stateReason", None)
        return True

    def _release(self, worker: dict, reason: str) -> None:
        self.releases.append((worker["jobId"], worker["workerId"], reason))

    # ---- each kind of WorkerMessage --------------------------------------------------

    def health(self, worker: dict, report: dict, time: str) -> dict:
        if _newer(worker.get("lastHealthReport"), time):
            worker["lastHealthReport"] = report | {"time": time}
            if report.get("vmStartupTime"):
                worker["vmStartupTime"] = report["vmStartupTime"]
            if _seconds(report.get("reportInterval")) > 0:
                worker["reportInterval"] = report["reportInterval"]
        # The worker follows what we answer now; until its next report it may also still be
        # on the interval it declared. Silence is judged against the longer of the two.
        worker["assignedReportInterval"] = self.assigned
        worker["livenessInterval"] = _duration(max(self.assigned_seconds, _seconds(worker.get("reportInterval"))))
        name = worker["workerId"]
        if report.get("vmIsBroken"):
            code = report.get("vmBrokenCode")
            detail = (f" ({code})" if code else "") + (f": {report['msg']}" if report.get("msg") else "")
            changed = self._set_state(worker, "LOST", time, f"VM_BROKEN{detail}")
            if changed is not None:
                self._release(worker, "the worker reported that its VM is broken")
            if changed:
                self._say(worker, "WARNING", f"Worker {name} reported that its VM is broken{detail}. "
                          f"{_RELEASED}", time)
        elif report.get("vmIsHealthy") is False:
            if self._set_state(worker, "UNHEALTHY", time, report.get("msg")):
                detail = f": {report['msg']}" if report.get("msg") else "."
                self._say(worker, "WARNING", f"Worker {name} reported it is unhealthy{detail}", time)
        else:
            before = worker["state"]
            if self._set_state(worker, "HEALTHY", time, None):
                again = "is healthy again" if before == "UNHEALTHY" else "is reporting again"
                self._say(worker, "DETAILED", f"Worker {name} {again}.", time)
        return {"reportInterval": self.assigned}

    def code(self, worker: dict, code: dict, time: str) -> None:
        importance, text = worker_codes.describe(worker["workerId"], code.get("code", ""),
                                                 code.get("parameters"))
        self._say(worker, importance, text, time)
        if _newer(worker.get("lastMessageCode"), time):
            worker["lastMessageCode"] = {"code": code.get("code", ""), "time": time}

    def metrics(self, worker: dict, report: dict, time: str, container: str | None = None) -> dict:
        job_id, worker_id = worker["jobId"], worker["workerId"]
        for kind, field, last in _SAMPLES:
            for sample in report.get(field, ()):
                at = sample.get("timestamp") or time
                body = {kind: sample, "container": container} if container else {kind: sample}
                self.samples.append((job_id, worker_id, at, orjson.dumps(body).decode()))
                if last and container is None and _newer(worker.get(last), at, "timestamp"):
                    worker[last] = sample if "timestamp" in sample else sample | {"timestamp": at}
        for name, sub in report.get("containers", {}).items():
            self.metrics(worker, sub, time, name)
        return {}

    def lifecycle(self, worker: dict, event: dict, time: str) -> None:
        start = event.get("containerStartTime", "")
        groups = worker.setdefault("lifecycle", [])
        group = next((g for g in groups if g.get("containerStartTime", "") == start), None)
        if group is None:
            group = {"containerStartTime": start, "events": []} if start else {"events": []}
            groups.append(group)
            groups.sort(key=lambda g: g.get("containerStartTime", ""))
            del groups[:-MAX_CONTAINERS]
        entry = {"event": event.get("event", "UNKNOWN_EVENT"), "time": time}
        if event.get("metadata"):
            entry["metadata"] = event["metadata"]
        if entry in group["events"]:
            return  # a retried message
        group["events"].append(entry)
        group["events"].sort(key=lambda e: e["time"])
        del group["events"][MAX_EVENTS:]
        ready = next((e["time"] for e in group["events"] if e["event"] == READY_EVENT), None)
        if ready:
            began = start or group["events"][0]["time"]
            group["startupDuration"] = wire.format_duration(wire.parse_time(ready) - wire.parse_time(began))
            if group is groups[-1]:
                worker["startupDuration"] = group["startupDuration"]

    def shutdown(self, worker: dict, notice: dict, time: str) -> dict:
        reason = notice.get("reason") or "UNKNOWN"
        if _newer(worker.get("shutdownNotice"), time):
            worker["shutdownNotice"] = {"reason": reason, "time": time}
        changed = self._set_state(worker, "LOST", time, f"SHUTDOWN_NOTICE ({reason})")
        if changed is not None:
            self._release(worker, f"the worker is shutting down ({reason})")
        if changed and reason == "PREEMPTION":
            self._say(worker, "WARNING", f"Worker {worker['workerId']} was preempted and is shutting "
                      f"down. {_RELEASED}", time)
        elif changed:
            self._say(worker, "DETAILED", f"Worker {worker['workerId']} is shutting down "
                      f"(reason: {reason}). {_RELEASED}", time)
        return {}

    def threads(self, worker: dict, report: dict, time: str) -> dict:
        if _newer(worker.get("lastThreadScalingReport"), time):
            worker["lastThreadScalingReport"] = report | {"time": time}
        # No autoscaling of threads yet: confirm what the worker runs, never fewer.
        current = report.get("currentThreadCount", 0)
        return {"recommendedThreadCount": current} if current > 0 else {}

    def streaming(self, worker: dict, report: dict, time: str) -> dict:
        if _newer(worker.get("lastStreamingScalingReport"), time):
            worker["lastStreamingScalingReport"] = report | {"time": time}
        limit = max(report.get("maximumThreadCount", 0), report.get("activeThreadCount", 0))
        return {"maximumThreadCount": limit} if limit > 0 else {}

    def sampling(self, worker: dict, report: dict, time: str) -> None:
        # The report carries deltas since the previous one; the registry keeps the totals.
        totals = worker.setdefault("dataSampling", {})
        for field, delta in report.items():
            totals[field] = str(int(totals.get(field, "0")) + int(delta))
        totals["lastReportTime"] = max(time, totals.get("lastReportTime", ""))

    def per_worker(self, worker: dict, report: dict, time: str) -> None:
        if _newer(worker.get("lastPerWorkerMetrics"), time):
            worker["lastPerWorkerMetrics"] = report | {"time": time}


# Samples of a ResourceUtilizationReport: (kind in store.workers.samples, field, registry field
# of the latest one).
_SAMPLES = (("cpu", "cpuTime", "lastCpu"), ("memory", "memoryInfo", "lastMemory"), ("gpu", "gpuUsage", None))

# WorkerMessage field: (WorkerMessageResponse field or None, handler)
_KINDS = {
    "workerHealthReport": ("workerHealthReportResponse", Ingest.health),
    "workerMessageCode": (None, Ingest.code),
    "workerMetrics": ("workerMetricsResponse", Ingest.metrics),
    "workerLifecycleEvent": (None, Ingest.lifecycle),
    "workerShutdownNotice": ("workerShutdownNoticeResponse", Ingest.shutdown),
    "workerThreadScalingReport": ("workerThreadScalingReportResponse", Ingest.threads),
    "streamingScalingReport": ("streamingScalingReportResponse", Ingest.streaming),
    "dataSamplingReport": (None, Ingest.sampling),
    "perWorkerMetrics": (None, Ingest.per_worker),
}
