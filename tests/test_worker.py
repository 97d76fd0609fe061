"""`headrace worker` processes against a live server without a pool of its own.

What a worker tells the service is read back from the registry the service keeps (the
store's workers table, through `headrace.store.workers`), and its effects from the API:
job state, job messages, leases moving between workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from headrace.store import Store
from headrace.store import workers as worker_rows
from tests.conftest import discovery_client, start_server
from tests.test_pipelines import (REGION, beam_args, gone, messages, pipeline_processes, read_output, slow_once,
                                  wait_for_state, wait_until)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    # Health reports every second instead of ten, so a short job sends several.
    srv = start_server(tmp_path_factory.mktemp("api"), env={"HEADRACE_HEALTH_INTERVAL": "1"})
    yield srv
    srv.stop()


@pytest.fixture
def api_df(api):
    return discovery_client(api.url)


class Workers:
    """Standalone `headrace worker` processes; whatever a test leaves running is stopped."""

    def __init__(self, server, root: Path):
        self.server = server
        self.root = root
        self.processes: list[subprocess.Popen] = []

    def start(self, worker_id: str, env: dict | None = None) -> subprocess.Popen:
        log = (self.root / f"{worker_id}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "headrace", "worker", "--endpoint", self.server.url, "--worker-id", worker_id,
             "--data-dir", str(self.root / worker_id)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.processes.append(process)
        return process

    def log(self, worker_id: str) -> str:
        return (self.root / f"{worker_id}.log").read_text()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def workers(api, tmp_path):
    pool = Workers(api, tmp_path)
    yield pool
    pool.stop()


def submit_slow_once(server, project: str, tmp_path: Path) -> tuple[str, Path]:
    """A job whose first run stops in user code (touching a marker) until it is killed."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    marker = tmp_path / "running"
    p = beam.Pipeline(options=PipelineOptions(beam_args(server, project, tmp_path)))
    p | beam.Create(["river", "mill"]) | beam.Map(slow_once(marker)) | beam.io.WriteToText(
        str(tmp_path / "out" / "words"))
    return p.run().job_id(), marker


def registry(server, job_id: str) -> list[dict]:
    store = Store(f"sqlite:///{server.data_dir / 'headrace.db'}")
    try:
        with store.read() as conn:
            return [w | {"samples": worker_rows.samples(conn, job_id, w["workerId"])}
                    for w in worker_rows.list_for_job(conn, job_id)]
    finally:
        store.close()


def test_worker_runs_a_job_and_reports_on_itself(api, api_df, workers, project, tmp_path):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    def pause(word):
        import time

        time.sleep(3)  # long enough for a few health reports at 1 s
        return word

    p = beam.Pipeline(options=PipelineOptions(beam_args(api, project, tmp_path)))
    p | beam.Create(["river"]) | beam.Map(pause) | beam.io.WriteToText(str(tmp_path / "out" / "words"))
    job_id = p.run().job_id()
    workers.start("w-self")
    assert wait_for_state(api_df, project, job_id)["currentState"] == "JOB_STATE_DONE"
    assert read_output(tmp_path / "out" / "words") == ["river"]

    [worker] = registry(api, job_id)
    labels = worker["labels"]
    assert (labels["JOB_ID"], labels["WORKER_ID"], labels["CONTAINER_TYPE"]) == (job_id, "w-self", "worker")
    assert labels["CONTAINER_ID"] in worker["containers"]
    [container] = worker["lifecycle"]
    events = [e["event"] for e in container["events"]]
    assert events[:3] == ["CONTAINER_START", "STAGING_FILES_DOWNLOAD_START", "STAGING_FILES_DOWNLOAD_FINISH"]
    assert "SDK_INSTALL_START" not in events  # nothing to install for this job
    # It follows the health interval the service answers with (1 s here, 10 s by default).
    assert worker["lastHealthReport"]["reportInterval"] == "1s" and worker["lastHealthReport"]["vmIsHealthy"]
    cpu = [s["cpu"] for s in worker["samples"] if "cpu" in s]
    memory = [s["memory"] for s in worker["samples"] if "memory" in s]
    assert len(cpu) >= 3 and len(memory) >= 3
    totals = [int(c["totalMs"]) for c in cpu]
    assert totals == sorted(totals) and totals[-1] > 0  # CPU time of the tree only grows
    # The pipeline's processes are in the tree: far more memory than the worker alone.
    assert max(int(m["currentRssBytes"]) for m in memory) > psutil.Process().memory_info().rss / 2
    texts = [m["messageText"] for m in messages(api_df, project, job_id)]
    assert "Worker w-self: harness started" in texts and "Workers have started successfully." in texts


def test_sigterm_sends_a_shutdown_notice_that_releases_the_item_at_once(api, api_df, workers, project, tmp_path):
    job_id, marker = submit_slow_once(api, project, tmp_path)
    # A lease of 10 minutes: only the shutdown notice can give the item back in time.
    first = workers.start("w-term", env={"HEADRACE_WORKER_LEASE_SECONDS": "600"})
    wait_until(marker.exists, 300, "the pipeline to run user code")
    running = pipeline_processes(first.pid, job_id)
    assert running

    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=15) == 0
    assert all(gone(p) for p in running)
    texts = [m["messageText"] for m in messages(api_df, project, job_id)]
    assert "Worker w-term is shutting down (reason: UNKNOWN). Any work it held was released for retry." in texts
    assert any(t.startswith("Lost contact with worker w-term") and "shutting down" in t for t in texts), texts

    workers.start("w-next")
    assert wait_for_state(api_df, project, job_id)["currentState"] == "JOB_STATE_DONE"
    assert read_output(tmp_path / "out" / "words") == ["mill", "river"]
    details = api_df.projects().locations().jobs().stages().getExecutionDetails(
        projectId=project, location=REGION, jobId=job_id, stageId="S01").execute()
    attempts = {w["workerName"]: [i["state"] for i in w["workItems"]] for w in details["workers"]}
    assert attempts == {"w-term": ["EXECUTION_STATE_FAILED"], "w-next": ["EXECUTION_STATE_SUCCEEDED"]}


def test_killed_worker_loses_its_lease_and_another_finishes_the_job(api, api_df, workers, project, tmp_path):
    job_id, marker = submit_slow_once(api, project, tmp_path)
    first = workers.start("w-kill")
    wait_until(marker.exists, 300, "the pipeline to run user code")
    running = pipeline_processes(first.pid, job_id)
    assert running

    first.kill()
    first.wait()
    # The pipeline goes with its worker: it must not race the next attempt.
    wait_until(lambda: all(gone(p) for p in running), 10, "the pipeline's processes to exit")
    workers.start("w-after")
    assert wait_for_state(api_df, project, job_id)["currentState"] == "JOB_STATE_DONE"
    assert read_output(tmp_path / "out" / "words") == ["mill", "river"]
    texts = [m["messageText"] for m in messages(api_df, project, job_id)]
    # Whichever comes first: its lease runs out, or its health reports stop for 3 intervals.
    assert any(t.startswith("Lost contact with worker w-kill") for t in texts), texts


def test_idle_worker_stops_at_once_on_sigterm(workers):
    process = workers.start("w-idle")
    wait_until(lambda: "leasing work" in workers.log("w-idle"), 60, "the worker to start leasing")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert "Worker w-idle stopped" in workers.log("w-idle")
