"""jobs.debug.getConfig, sendCapture and getWorkerStacktraces.

The protocol is the one Dataflow's Java worker speaks (DebugCapture): it asks getConfig
for {"capture_frequency_usec", "expire_timestamp_usec"} and, while that is live, sends a
capture of its status pages every so often ({"pages": [{"name": "/threadz", "content"}]}).
getWorkerStacktraces turns a worker's latest captured thread dumps into `sdks[]`. The
capture formats read are listed in docs/workers.md.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from dataclasses import dataclass

import orjson

from headrace import wire
from headrace.config import Config
from headrace.errors import invalid
from headrace.service.jobs import Jobs
from headrace.service.workers import Workers
from headrace.store import Store
from headrace.store import debug as capture_rows

CAPTURE_SECONDS = 60.0  # how often a worker sends a capture (times the back-pressure factor)
CONFIG_SECONDS = 600.0  # a config expires unless refreshed (Java workers refresh every 60s)
KEEP_CAPTURES = 100  # per worker; older ones are dropped as new ones arrive
SCAN_CAPTURES = 50  # newest captures looked through for each component's stacks
MAX_CAPTURE_BYTES = 32 * 1024 * 1024  # a ZLIB capture inflated, like the request size limit

# Java worker /threadz: "--- Threads (2): [Thread[a,5,main], Thread[b,5,main]] State: WAITING stack: ---"
_JAVA = re.compile(r"^--- Threads \((\d+)\): \[(.*)\] State: (\S+) stack: ---$")
# Beam Python worker_status.thread_dump: "--- Thread #123 name: MainThread and other 2 threads---"
_PYTHON = re.compile(r"^--- Thread #\d+ name: (.*?) (?:and other (\d+) threads)?---$")
_JAVA_THREAD = re.compile(r"Thread\[([^\]]*)\]")


def _worker_id(body: dict, which: str) -> str:
    worker_id = body.get("workerId")
    if not worker_id:
        raise invalid(f"workerId is required: name {which}.")
    return worker_id


@dataclass
class Debug:
    config: Config
    store: Store
    jobs: Jobs
    workers: Workers

    def get_config(self, project_id: str, location: str, job_id: str, body: dict) -> dict:
        worker_id = _worker_id(body, "the worker (VM hostname) asking for its config")
        with self.store.read() as conn:
            self.jobs.load(conn, project_id, location, job_id)
            self.workers.known(conn, job_id, worker_id)
        factor = self.config.busy_interval_factor if self.workers.load.busy else 1.0
        expire = wire.now().timestamp() + CONFIG_SECONDS
        config = {"capture_frequency_usec": int(CAPTURE_SECONDS * factor * 1e6),
                  "expire_timestamp_usec": int(expire * 1e6)}
        return {"config": orjson.dumps(config).decode()}

    def send_capture(self, project_id: str, location: str, job_id: str, body: dict) -> dict:
        worker_id = _worker_id(body, "the worker (VM hostname) the capture comes from")
        data_format = body.get("dataFormat", "DATA_FORMAT_UNSPECIFIED")
        data = body.get("data", "")
        text = _decode(data_format, data)
        if data_format == "JSON":
            try:
                orjson.loads(text)
            except orjson.JSONDecodeError as error:
                raise invalid(f"data is declared JSON but does not parse: {error}.") from None
        with self.store.write() as conn:
            self.jobs.load(conn, project_id, location, job_id)
            capture_rows.insert(conn, job_id, worker_id, body.get("componentId") or "worker",
                                wire.format_time(wire.now()), data_format, data, KEEP_CAPTURES)
        return {}

    def stacktraces(self, project_id: str, location: str, job_id: str, body: dict) -> dict:
        worker_id = _worker_id(body, "the worker whose stack traces you want")
        with self.store.read() as conn:
            self.jobs.load(conn, project_id, location, job_id)
            self.workers.known(conn, job_id, worker_id)
            captures = capture_rows.latest(conn, job_id, worker_id, body.get("endTime"), SCAN_CAPTURES)
        sdks, done = [], set()
        for component, time, data_format, data in captures:
            if component not in done:
                found = _sdks(component, time, _decode(data_format, data))
                if found:
                    done.add(component)
                    sdks += found
        return {"sdks": sdks}


def _decode(data_format: str, data: str) -> str:
    if data_format == "BROTLI":
        raise invalid("BROTLI captures are not supported: send RAW, JSON or ZLIB (base64 of zlib).")
    if data_format != "ZLIB":
        return data
    try:
        inflate = zlib.decompressobj()
        text = inflate.decompress(base64.b64decode(data, validate=True), MAX_CAPTURE_BYTES)
    except (binascii.Error, zlib.error, ValueError) as error:
        raise invalid(f"data is declared ZLIB but is not base64 of zlib-compressed bytes: {error}.") from None
    if inflate.unconsumed_tail:
        raise invalid(f"The capture inflates to more than {MAX_CAPTURE_BYTES} bytes; send less.")
    return text.decode("utf-8", "replace")


def _sdks(component: str, time: str, text: str) -> list[dict]:
    """The SDKs and their stacks in one capture, in whichever format it came."""
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("sdks"), list):
        return [{"sdkId": str(s.get("sdkId") or component),
                 "stacks": [_stack(st, time) for st in s["stacks"] if isinstance(st, dict)]
                 if isinstance(s.get("stacks"), list) else []}
                for s in payload["sdks"] if isinstance(s, dict)]
    if isinstance(payload, dict) and isinstance(payload.get("pages"), list):
        dumps = [p.get("content", "") for p in payload["pages"]
                 if isinstance(p, dict) and str(p.get("name", "")).strip("/") == "threadz"]
        stacks = [s for dump in dumps for s in _parse_dump(dump, time)]
    elif payload is None and text.strip():
        # Plain text in a format we do not parse is still a person's best clue: one stack.
        stacks = _parse_dump(text, time) or [{"threadName": "all", "stackContent": text, "timestamp": time}]
    else:
        stacks = []
    return [{"sdkId": component, "stacks": stacks}] if stacks else []


def _stack(raw: dict, time: str) -> dict:
    """A Stack from a structured capture, keeping only what the schema declares."""
    out = {"stackContent": str(raw.get("stackContent", "")), "timestamp": time}
    for field in ("threadName", "threadState"):
        if raw.get(field):
            out[field] = str(raw[field])
    if isinstance(raw.get("threadCount"), int) and raw["threadCount"] > 0:
        out["threadCount"] = raw["threadCount"]
    try:
        out["timestamp"] = wire.format_time(wire.parse_time(str(raw["timestamp"])))
    except (KeyError, ValueError):
        pass
    return out


def _parse_dump(text: str, time: str) -> list[dict]:
    """Stacks of a Java /threadz page or a Beam Python thread dump."""
    stacks: list[dict] = []
    bodies: list[list[str]] = []
    for line in text.splitlines():
        java, python = _JAVA.match(line), _PYTHON.match(line)
        if java:
            names = _JAVA_THREAD.findall(java.group(2)) or [java.group(2)]
            stacks.append({"threadName": names[0], "threadCount": int(java.group(1)),
                           "threadState": java.group(3), "timestamp": time})
            bodies.append([])
        elif python:
            stacks.append({"threadName": python.group(1), "threadCount": 1 + int(python.group(2) or 0),
                           "timestamp": time})
            bodies.append([])
        elif stacks and not line.startswith(("threads: ", "=" * 10)):
            bodies[-1].append(line)
    for stack, body in zip(stacks, bodies):
        content = "\n".join(body).strip("\n")
        if content:
            stack["stackContent"] = content
    return stacks
