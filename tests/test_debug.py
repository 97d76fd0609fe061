"""jobs.debug.getConfig, sendCapture and getWorkerStacktraces through googleapiclient, in the
shapes Dataflow's Java worker (DebugCapture, /threadz) and Beam's Python thread dump use."""

from __future__ import annotations

import base64
import json
import time
import zlib

import pytest
from googleapiclient.errors import HttpError

REGION = "us-central1"

JAVA_THREADZ = """--- Threads (2): [Thread[CommitThread-0,10,main], Thread[CommitThread-1,10,main]] State: WAITING stack: ---
  java.base/jdk.internal.misc.Unsafe.park(Native Method)
  java.base/java.util.concurrent.locks.LockSupport.park(LockSupport.java:211)

--- Threads (1): [Thread[main,5,main]] State: RUNNABLE stack: ---
  org.apache.beam.runners.dataflow.worker.DataflowBatchWorkerHarness.main(DataflowBatchWorkerHarness.java:85)

"""

PYTHON_DUMP = """========== THREAD DUMP ==========
--- Thread #140 name: MainThread ---
  File "sdk_worker_main.py", line 10, in main
    run()

--- Thread #141 name: worker-0 and other 2 threads---
threads: [(141, 'worker-0'), (142, 'worker-1'), (143, 'worker-2')]
  File "threading.py", line 320, in wait
    waiter.acquire()

=============================="""


def debug(df):
    return df.projects().locations().jobs().debug()


def setup_job(df, project, workers=("w-1",)):
    """A job with workers that have reported, so they are known."""
    job = df.projects().locations().jobs().create(projectId=project, location=REGION,
                                                  body={"name": "dbg"}).execute()
    df.projects().locations().workerMessages(projectId=project, location=REGION, body={"workerMessages": [
        {"labels": {"JOB_ID": job["id"], "WORKER_ID": w}, "workerHealthReport": {"vmIsHealthy": True}}
        for w in workers]}).execute()
    return job["id"]


def capture(df, project, job_id, data, worker="w-1", component="JavaHarness", data_format=None):
    body = {"workerId": worker, "componentId": component, "data": data}
    if data_format:
        body["dataFormat"] = data_format
    return debug(df).sendCapture(projectId=project, location=REGION, jobId=job_id, body=body).execute()


def stacktraces(df, project, job_id, worker="w-1", **body):
    return debug(df).getWorkerStacktraces(projectId=project, location=REGION, jobId=job_id,
                                          body={"workerId": worker, **body}).execute()


def error_of(excinfo) -> dict:
    return json.loads(excinfo.value.content)["error"]


def test_get_config_for_a_known_worker(df, project, check):
    job_id = setup_job(df, project)
    out = debug(df).getConfig(projectId=project, location=REGION, jobId=job_id,
                              body={"workerId": "w-1", "componentId": "JavaHarness"}).execute()
    check(out, "GetDebugConfigResponse")
    # Exactly the keys Dataflow's Java worker maps (its Jackson mapper refuses unknown ones).
    config = json.loads(out["config"])
    assert set(config) == {"capture_frequency_usec", "expire_timestamp_usec"}
    assert config["capture_frequency_usec"] == 60_000_000
    assert config["expire_timestamp_usec"] > time.time() * 1e6


def test_get_config_for_an_unknown_worker_or_job_is_404(df, project):
    job_id = setup_job(df, project)
    for job, worker, status, words in ((job_id, "w-unknown", 404, "Worker 'w-unknown' is not known to job"),
                                       ("2026-01-01_00_00_00-1", "w-1", 404, "Job 2026-01-01_00_00_00-1"),
                                       (job_id, "", 400, "workerId is required")):
        with pytest.raises(HttpError) as err:
            debug(df).getConfig(projectId=project, location=REGION, jobId=job,
                                body={"workerId": worker}).execute()
        assert err.value.status_code == status
        assert words in error_of(err)["message"]


def test_java_threadz_capture_becomes_stacks(df, project, check):
    job_id = setup_job(df, project)
    payload = {"pages": [{"name": "/statusz", "content": "<html>ok</html>"},
                         {"name": "/threadz", "content": JAVA_THREADZ}]}
    assert capture(df, project, job_id, json.dumps(payload)) == {}
    out = stacktraces(df, project, job_id)
    check(out, "GetWorkerStacktracesResponse")
    [sdk] = out["sdks"]
    assert sdk["sdkId"] == "JavaHarness"
    first, second = sdk["stacks"]
    assert (first["threadName"], first["threadCount"], first["threadState"]) == ("CommitThread-0,10,main", 2, "WAITING")
    assert first["stackContent"].splitlines()[0].strip() == "java.base/jdk.internal.misc.Unsafe.park(Native Method)"
    assert (second["threadName"], second["threadCount"], second["threadState"]) == ("main,5,main", 1, "RUNNABLE")
    assert first["timestamp"] == second["timestamp"]


def test_python_dump_zlib_and_structured_captures(df, project, check):
    job_id = setup_job(df, project)
    packed = base64.b64encode(zlib.compress(PYTHON_DUMP.encode())).decode()
    capture(df, project, job_id, packed, component="sdk-0-0", data_format="ZLIB")
    structured = {"sdks": [{"sdkId": "go-sdk", "stacks": [
        {"threadName": "goroutine 1", "threadState": "running", "stackContent": "main.main()",
         "timestamp": "2026-01-02T03:04:05Z", "threadCount": 1}]}]}
    capture(df, project, job_id, json.dumps(structured), component="go", data_format="JSON")
    out = stacktraces(df, project, job_id)
    check(out, "GetWorkerStacktracesResponse")
    by_id = {s["sdkId"]: s["stacks"] for s in out["sdks"]}
    assert set(by_id) == {"sdk-0-0", "go-sdk"}
    main, workers = by_id["sdk-0-0"]
    assert main["threadName"] == "MainThread" and main["threadCount"] == 1 and "run()" in main["stackContent"]
    assert workers["threadName"] == "worker-0" and workers["threadCount"] == 3
    assert "threads:" not in workers["stackContent"] and "waiter.acquire()" in workers["stackContent"]
    assert by_id["go-sdk"][0]["timestamp"] == "2026-01-02T03:04:05.000000Z"


def test_latest_capture_wins_and_end_time_looks_back(df, project):
    job_id = setup_job(df, project, workers=("w-1", "w-2"))
    capture(df, project, job_id, "--- Thread #1 name: old ---\n  frame_old\n", component="py")
    first = stacktraces(df, project, job_id)["sdks"][0]["stacks"][0]
    capture(df, project, job_id, "--- Thread #1 name: new ---\n  frame_new\n", component="py")
    assert stacktraces(df, project, job_id)["sdks"][0]["stacks"][0]["threadName"] == "new"
    back = stacktraces(df, project, job_id, endTime=first["timestamp"])
    assert back["sdks"][0]["stacks"][0]["threadName"] == "old"
    # Another worker's captures are its own; a known worker without any has no stacks.
    assert stacktraces(df, project, job_id, worker="w-2") == {}


def test_capture_errors(df, project):
    job_id = setup_job(df, project)
    cases = [
        (dict(data="x", data_format="BROTLI"), 400, "BROTLI"),
        (dict(data="not base64!", data_format="ZLIB"), 400, "ZLIB"),
        (dict(data="{", data_format="JSON"), 400, "JSON"),
        (dict(data="x", worker=""), 400, "workerId is required"),
        (dict(data=base64.b64encode(zlib.compress(b"0" * (33 * 1024 * 1024))).decode(), data_format="ZLIB"),
         400, "inflates to more than"),
    ]
    for kwargs, status, words in cases:
        with pytest.raises(HttpError) as err:
            capture(df, project, job_id, **kwargs)
        assert err.value.status_code == status and words in error_of(err)["message"]
    with pytest.raises(HttpError) as err:
        capture(df, project, "2026-01-01_00_00_00-1", "x")
    assert err.value.status_code == 404
    with pytest.raises(HttpError) as err:
        stacktraces(df, project, job_id, worker="w-unknown")
    assert err.value.status_code == 404


def test_project_level_aliases(df, project, check):
    job_id = setup_job(df, project)
    alias = df.projects().jobs().debug()
    out = alias.getConfig(projectId=project, jobId=job_id, body={"workerId": "w-1"}).execute()
    check(out, "GetDebugConfigResponse")
    assert json.loads(out["config"])["capture_frequency_usec"] > 0
    assert alias.sendCapture(projectId=project, jobId=job_id,
                             body={"workerId": "w-1", "data": PYTHON_DUMP}).execute() == {}
    [sdk] = stacktraces(df, project, job_id)["sdks"]
    assert sdk["sdkId"] == "worker" and len(sdk["stacks"]) == 2
