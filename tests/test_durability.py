"""Every write the API acknowledged survives `kill -9` of `headrace serve`, and every state
change is whole: a job that exists has the message and work item written with it.

Also the store's migrations: a fresh data directory is at the latest schema version, and a
restart on an existing directory keeps its data.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
import uuid

import httpx

from headrace.store.migrations import MIGRATIONS
from tests.conftest import start_server

REGION = "us-central1"
WRITERS = 8
ACKED_BEFORE_KILL = 48  # jobs created and acknowledged before the server is killed


class Ledger:
    """What the server acknowledged, written only after a 200 arrived."""

    def __init__(self):
        self.lock = threading.Lock()
        self.jobs: dict[str, str] = {}  # id -> name
        self.labels: dict[str, int] = {}  # id -> highest acknowledged label version
        self.cancelled: set[str] = set()
        self.reports: dict[str, str] = {}  # id -> parameter of an acknowledged worker message
        self.refusals: list[str] = []  # non-200 answers before the kill: a test failure

    def count(self) -> int:
        with self.lock:
            return len(self.jobs)


def _writer(url: str, project: str, n: int, ledger: Ledger, stop: threading.Event) -> None:
    """Create a job, update its labels twice, have a worker report on it (WorkerMessages commit
    in groups), cancel every third job; forever, until the server dies."""
    base = f"/v1b3/projects/{project}/locations/{REGION}/jobs"
    worker_messages = f"/v1b3/projects/{project}/locations/{REGION}/WorkerMessages"
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(10**6):
            if stop.is_set():
                return
            try:
                created = client.post(base, json={"name": f"d-{n}-{i}", "labels": {"v": "0"}})
                if created.status_code != 200:
                    ledger.refusals.append(created.text)
                    return
                job_id = created.json()["id"]
                with ledger.lock:
                    ledger.jobs[job_id] = f"d-{n}-{i}"
                for version in (1, 2):
                    updated = client.put(f"{base}/{job_id}", params={"updateMask": "labels"},
                                         json={"labels": {"v": str(version)}})
                    if updated.status_code != 200:
                        ledger.refusals.append(updated.text)
                        return
                    with ledger.lock:
                        ledger.labels[job_id] = version
                report = {"labels": {"JOB_ID": job_id, "WORKER_ID": f"w-{n}"}, "time": "2026-01-01T00:00:00Z",
                          "workerMessageCode": {"code": "DURABILITY_PROBE", "parameters": {"seq": f"{n}-{i}"}}}
                reported = client.post(worker_messages, json={"workerMessages": [report]})
                if reported.status_code != 200:
                    ledger.refusals.append(reported.text)
                    return
                with ledger.lock:
                    ledger.reports[job_id] = f"seq={n}-{i}"
                if i % 3 == 0:
                    cancel = client.put(f"{base}/{job_id}", json={"requestedState": "JOB_STATE_CANCELLED"})
                    if cancel.status_code != 200:
                        ledger.refusals.append(cancel.text)
                        return
                    with ledger.lock:
                        ledger.cancelled.add(job_id)
            except httpx.TransportError:
                return  # the server is gone: whatever was in flight was never acknowledged


def write_until_killed(server, project: str) -> Ledger:
    """WRITERS threads write to the server until it gets SIGKILL mid-stream, with requests still
    in flight; returns what it acknowledged."""
    ledger, stop = Ledger(), threading.Event()
    threads = [threading.Thread(target=_writer, args=(server.url, project, n, ledger, stop), daemon=True)
               for n in range(WRITERS)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while ledger.count() < ACKED_BEFORE_KILL and time.monotonic() < deadline and not ledger.refusals:
            time.sleep(0.01)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    finally:
        stop.set()
        server.stop()
    for t in threads:
        t.join(timeout=30)
    assert not ledger.refusals, ledger.refusals[:3]
    assert ledger.count() >= ACKED_BEFORE_KILL, "the writers were too slow to reach the kill"
    assert ledger.labels and ledger.reports and ledger.cancelled
    return ledger


def check_acknowledged(client: httpx.Client, base: str, ledger: Ledger) -> list[str]:
    """Every write the ledger says was acknowledged is in the restarted server; returns the ids
    of every job it lists."""
    for job_id, name in ledger.jobs.items():
        response = client.get(f"{base}/{job_id}", params={"view": "JOB_VIEW_ALL"})
        assert response.status_code == 200, f"acknowledged job {job_id} lost: {response.text}"
        job = response.json()
        assert job["name"] == name
        # A later update may have committed without its answer arriving; never an earlier one.
        assert int(job["labels"]["v"]) >= ledger.labels.get(job_id, 0), job
        if job_id in ledger.cancelled:
            assert job["currentState"] in ("JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"), job
        if job_id in ledger.reports:
            texts = [m["messageText"] for m in _messages(client, base, job_id)]
            assert any(ledger.reports[job_id] in t for t in texts), (job_id, texts)
    listed = _all_jobs(client, base)
    assert set(ledger.jobs) <= set(listed)
    return listed


def test_acknowledged_writes_survive_kill_9(tmp_path):
    project = f"dur-{uuid.uuid4().hex[:8]}"
    data = tmp_path / "data"
    ledger = write_until_killed(start_server(data), project)

    restarted = start_server(data)
    try:
        with httpx.Client(base_url=restarted.url, timeout=30) as client:
            base = f"/v1b3/projects/{project}/locations/{REGION}/jobs"
            listed = check_acknowledged(client, base, ledger)
            # Every job that exists, acknowledged or not, was written whole: with its message.
            for job_id in listed:
                texts = [m["messageText"] for m in _messages(client, base, job_id)]
                assert any("created" in t for t in texts), (job_id, texts)
    finally:
        restarted.stop()
    db = sqlite3.connect(data / "headrace.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # Whole transactions: no work item without its job, no message without its job.
        assert db.execute("SELECT count(*) FROM work_items WHERE job_id NOT IN (SELECT id FROM jobs)").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM job_messages WHERE job_id NOT IN (SELECT id FROM jobs)").fetchone()[0] == 0
    finally:
        db.close()


def _messages(client: httpx.Client, base: str, job_id: str) -> list[dict]:
    response = client.get(f"{base}/{job_id}/messages", params={"minimumImportance": "JOB_MESSAGE_DEBUG",
                                                                "pageSize": 1000})
    assert response.status_code == 200, response.text
    return response.json().get("jobMessages", [])


def _all_jobs(client: httpx.Client, base: str) -> list[str]:
    ids, token = [], None
    while True:
        page = client.get(base, params={"pageSize": 200, **({"pageToken": token} if token else {})}).json()
        ids += [j["id"] for j in page.get("jobs", [])]
        token = page.get("nextPageToken")
        if not token:
            return ids


def _schema_versions(data) -> list[int]:
    db = sqlite3.connect(data / "headrace.db")
    try:
        return [row[0] for row in db.execute("SELECT version FROM schema_version")]
    finally:
        db.close()


def test_fresh_store_is_at_the_latest_version_and_a_restart_keeps_data(tmp_path):
    data = tmp_path / "data"
    server = start_server(data)
    try:
        job = httpx.post(f"{server.url}/v1b3/projects/p/locations/{REGION}/jobs", json={"name": "kept"}).json()
    finally:
        server.stop()
    assert _schema_versions(data) == [len(MIGRATIONS)]
    server = start_server(data)
    try:
        got = httpx.get(f"{server.url}/v1b3/projects/p/locations/{REGION}/jobs/{job['id']}")
        assert got.status_code == 200 and got.json()["name"] == "kept"
    finally:
        server.stop()
    assert _schema_versions(data) == [len(MIGRATIONS)]


def test_a_store_from_a_newer_release_is_refused_with_a_message(tmp_path):
    import subprocess
    import sys

    srv = start_server(tmp_path)
    srv.stop()
    with sqlite3.connect(tmp_path / "headrace.db") as db:
        db.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS) + 1,))
    done = subprocess.run([sys.executable, "-m", "headrace", "serve", "--port", "0", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "newer than this Headrace knows" in done.stderr and "Traceback" not in done.stderr
