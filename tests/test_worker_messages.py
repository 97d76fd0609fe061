"""WorkerMessages through googleapiclient and plain HTTP: answers, the worker registry, job
messages from message codes, lease release for broken, departing and silent workers, and
back-pressure on the report interval.

The registry has no v1b3 read method of its own; tests read it from the server's store the
way the execution-details and console code do (store/workers.py), next to what the API shows.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from googleapiclient.errors import HttpError

from headrace.config import Config
from headrace.service.workers import LOOP_MESSAGES
from headrace.store import Store
from headrace.store import workers as worker_rows
from tests.conftest import discovery_client, start_server, wait_for

REGION = "us-central1"
BASE = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def at(seconds: float) -> str:
    """A worker-clock timestamp, `seconds` after BASE, in the service's canonical form."""
    return (BASE + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def create_job(df, project, name="wordcount", location=REGION, **fields):
    return df.projects().locations().jobs().create(
        projectId=project, location=location, body={"name": name, **fields}).execute()


def msg(job_id: str, worker: str = "w-1", seconds: float = 0, **kinds) -> dict:
    labels = {"JOB_ID": job_id, "WORKER_ID": worker, "CONTAINER_TYPE": "harness", "CONTAINER_ID": "c-1"}
    return {"labels": labels, "time": at(seconds), **kinds}


def send(df, project, messages, location=REGION):
    return df.projects().locations().workerMessages(
        projectId=project, location=location, body={"workerMessages": messages}).execute()


def job_log(df, project, job_id, location=REGION) -> list[tuple[str, str]]:
    out = df.projects().locations().jobs().messages().list(
        projectId=project, location=location, jobId=job_id, pageSize=1000).execute()
    return [(m["messageImportance"], m["messageText"]) for m in out.get("jobMessages", [])]


def lease(df, project, job_id, worker):
    return df.projects().locations().jobs().workItems().lease(
        projectId=project, location=REGION, jobId=job_id,
        body={"workerId": worker, "requestedLeaseDuration": "60s", "currentWorkerTime": at(0),
              "workItemTypes": ["map_task"]}).execute().get("workItems", [])


def error_of(excinfo) -> dict:
    return json.loads(excinfo.value.content)["error"]


class Registry:
    """Reads the worker registry from a server's store."""

    def __init__(self, server):
        self.store = Store(Config(data_dir=server.data_dir).store_url)

    def workers(self, job_id: str) -> dict[str, dict]:
        with self.store.read() as conn:
            return {w["workerId"]: w for w in worker_rows.list_for_job(conn, job_id)}

    def samples(self, job_id: str, worker_id: str) -> list[dict]:
        with self.store.read() as conn:
            return worker_rows.samples(conn, job_id, worker_id)


@pytest.fixture(scope="module")
def registry(server):
    reg = Registry(server)
    yield reg
    reg.store.close()


# ---- answers ---------------------------------------------------------------------------------

def test_every_kind_is_answered_once_in_order(df, project, check):
    job = create_job(df, project)
    messages = [
        msg(job["id"], workerHealthReport={"vmIsHealthy": True, "reportInterval": "10s",
                                           "vmStartupTime": at(-60), "pods": [{"name": "p"}]}),
        msg(job["id"], workerMessageCode={"code": "HARNESS_STARTED"}),
        msg(job["id"], workerMetrics={"cpuTime": [{"rate": 0.5, "timestamp": at(1), "totalMs": "100"}],
                                      "memoryInfo": [{"currentRssBytes": "1024", "timestamp": at(1)}]}),
        msg(job["id"], workerLifecycleEvent={"event": "CONTAINER_START", "containerStartTime": at(-5)}),
        msg(job["id"], workerThreadScalingReport={"currentThreadCount": 12}),
        msg(job["id"], streamingScalingReport={"activeThreadCount": 7, "maximumThreadCount": 9,
                                               "outstandingBytes": "5"}),
        msg(job["id"], dataSamplingReport={"elementsSampledCount": "3", "bytesWrittenDelta": "40"}),
        msg(job["id"], perWorkerMetrics={"perStepNamespaceMetrics": [{"originalStep": "s1",
                                                                      "metricsNamespace": "ns"}]}),
        msg(job["id"], worker="w-2", workerShutdownNotice={"reason": "UNKNOWN"}),
    ]
    out = send(df, project, messages)
    check(out, "SendWorkerMessagesResponse")
    answers = out["workerMessageResponses"]
    assert len(answers) == len(messages)
    assert answers[0] == {"workerHealthReportResponse": {"reportInterval": "10s"}}
    assert answers[1] == {} and answers[2] == {} and answers[3] == {}
    assert answers[4] == {"workerThreadScalingReportResponse": {"recommendedThreadCount": 12}}
    assert answers[5] == {"streamingScalingReportResponse": {"maximumThreadCount": 9}}
    assert answers[6] == {} and answers[7] == {} and answers[8] == {}


def test_thread_answers_never_shrink_a_worker(df, project):
    job = create_job(df, project)
    out = send(df, project, [
        msg(job["id"], workerThreadScalingReport={"currentThreadCount": 300}),
        msg(job["id"], streamingScalingReport={"activeThreadCount": 40, "maximumThreadCount": 16}),
        msg(job["id"], workerThreadScalingReport={}),
        msg(job["id"], workerHealthReport={"vmIsHealthy": True}, workerThreadScalingReport={"currentThreadCount": 2}),
    ])["workerMessageResponses"]
    assert out[0]["workerThreadScalingReportResponse"]["recommendedThreadCount"] == 300
    assert out[1]["streamingScalingReportResponse"]["maximumThreadCount"] == 40  # not below what runs
    assert out[2] == {}  # nothing reported, nothing recommended (0 means "no change")
    assert set(out[3]) == {"workerHealthReportResponse", "workerThreadScalingReportResponse"}


def test_project_level_alias_and_an_empty_request(df, project, check):
    job = create_job(df, project)
    out = df.projects().workerMessages(projectId=project, body={"workerMessages": [
        msg(job["id"], workerHealthReport={"vmIsHealthy": True})]}).execute()
    check(out, "SendWorkerMessagesResponse")
    assert out["workerMessageResponses"] == [{"workerHealthReportResponse": {"reportInterval": "10s"}}]
    assert send(df, project, []) == {}


def test_gapic_style_integer_enums_and_snake_case(http, df, project, registry):
    job = create_job(df, project)
    body = {"worker_messages": [{"labels": {"JOB_ID": job["id"], "WORKER_ID": "w-9"}, "time": at(0),
                                 "worker_lifecycle_event": {"event": 2, "container_start_time": at(0)}}]}
    r = http.post(f"/v1b3/projects/{project}/locations/{REGION}/WorkerMessages?$alt=json;enum-encoding=int",
                  json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"workerMessageResponses": [{}]}
    events = registry.workers(job["id"])["w-9"]["lifecycle"][0]["events"]
    assert [e["event"] for e in events] == ["CONTAINER_START"]


# ---- errors ----------------------------------------------------------------------------------

def test_unknown_job_or_missing_labels_are_refused_whole(df, project, registry):
    job = create_job(df, project)
    good = msg(job["id"], workerMessageCode={"code": "HARNESS_STARTED"})
    for bad, status, words in [
        (msg("2026-01-01_00_00_00-1"), 404, "JOB_ID label of workerMessages[1]"),
        ({"labels": {"JOB_ID": job["id"]}, "workerHealthReport": {}}, 400, "no WORKER_ID label"),
        ({"workerHealthReport": {}}, 400, "no JOB_ID and WORKER_ID label"),
    ]:
        with pytest.raises(HttpError) as err:
            send(df, project, [good, bad])
        assert err.value.status_code == status
        assert words in error_of(err)["message"]
    # Nothing of a refused request was applied: not the good message either.
    assert registry.workers(job["id"]) == {}
    assert not [t for _, t in job_log(df, project, job["id"]) if "harness" in t]


def test_job_of_another_project_or_region_is_not_found(df, project):
    job = create_job(df, project)
    with pytest.raises(HttpError) as err:
        send(df, project + "x", [msg(job["id"], workerHealthReport={})])
    assert err.value.status_code == 404
    with pytest.raises(HttpError) as err:
        send(df, project, [msg(job["id"], workerHealthReport={})], location="europe-west1")
    assert err.value.status_code == 404
    assert error_of(err)["status"] == "NOT_FOUND"


def test_undeclared_fields_are_rejected(df, project):
    job = create_job(df, project)
    with pytest.raises(HttpError) as err:
        send(df, project, [msg(job["id"], workerHealthReport={"vmIsBroke": True})])
    assert err.value.status_code == 400
    assert "vmIsBroke" in error_of(err)["message"]


def test_concurrent_requests_succeed_or_fail_on_their_own(server, df, project, registry):
    """Requests that arrive together may share a transaction; a refused one must not take
    the others down with it, nor leave anything behind."""
    import httpx
    from concurrent.futures import ThreadPoolExecutor

    job = create_job(df, project)
    path = f"/v1b3/projects/{project}/locations/{REGION}/WorkerMessages"

    def post(i: int) -> int:
        job_id = job["id"] if i % 3 else "2026-01-01_00_00_00-404"
        body = {"workerMessages": [msg(job_id, f"w-{i}", s, workerHealthReport={"vmIsHealthy": True},
                                       workerMessageCode={"code": "HARNESS_STARTED"}) for s in range(20)]}
        with httpx.Client(base_url=server.url, timeout=30) as client:
            r = client.post(path, json=body)
        assert r.status_code == 200 or "2026-01-01_00_00_00-404" in r.json()["error"]["message"]
        return r.status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(post, range(24)))
    assert codes == [404 if i % 3 == 0 else 200 for i in range(24)]
    assert set(registry.workers(job["id"])) == {f"w-{i}" for i in range(24) if i % 3}
    started = [t for _, t in job_log(df, project, job["id"]) if t.endswith("harness started")]
    assert len(started) == 16 * 20


def test_a_request_too_large_for_the_event_loop_is_ingested_whole(df, project, registry):
    """Past LOOP_MESSAGES a group is ingested in a thread instead of on the event loop: the
    same answers and the same registry."""
    job = create_job(df, project)
    count = LOOP_MESSAGES + 1
    messages = [msg(job["id"], f"w-{i % 50}", i, workerHealthReport={"vmIsHealthy": True},
                    workerMetrics={"cpuTime": [{"timestamp": at(i), "rate": 0.5, "totalMs": str(i)}]})
                for i in range(count)]
    answers = send(df, project, messages)["workerMessageResponses"]
    assert len(answers) == count
    assert all(a["workerHealthReportResponse"]["reportInterval"] == "10s" for a in answers)
    workers = registry.workers(job["id"])
    assert set(workers) == {f"w-{i}" for i in range(50)}
    assert workers["w-49"]["lastHealthReport"]["time"] == at(count - 2)  # 5000 is w-0's
    assert len(registry.samples(job["id"], "w-7")) == len(range(7, count, 50))


# ---- the registry ----------------------------------------------------------------------------

def test_registry_groups_by_worker_and_keeps_the_latest(df, project, registry):
    job = create_job(df, project)
    send(df, project, [
        msg(job["id"], "w-1", 10, workerHealthReport={"vmIsHealthy": True, "vmStartupTime": at(-100),
                                                      "reportInterval": "5s", "msg": "new"}),
        msg(job["id"], "w-2", 1, workerHealthReport={"vmIsHealthy": True}),
    ])
    # An older report arriving late changes neither the latest report nor the state.
    send(df, project, [msg(job["id"], "w-1", 5, workerHealthReport={"vmIsHealthy": False, "msg": "old"})])
    workers = registry.workers(job["id"])
    assert set(workers) == {"w-1", "w-2"}
    w1 = workers["w-1"]
    assert w1["state"] == "HEALTHY"
    assert w1["lastHealthReport"]["msg"] == "new" and w1["lastHealthReport"]["time"] == at(10)
    assert w1["vmStartupTime"] == at(-100)
    assert w1["reportInterval"] == "5s" and w1["livenessInterval"] == "10s"  # ours is longer
    assert w1["labels"]["CONTAINER_TYPE"] == "harness" and w1["containers"] == {"c-1": "harness"}
    assert w1["lastMessageTime"] == at(10) and w1["firstSeen"] <= w1["lastSeen"]
    assert workers["w-2"]["jobId"] == job["id"]


def test_lifecycle_timeline_groups_restarts_and_sorts_events(df, project, registry):
    job = create_job(df, project)
    first, second = at(0), at(100)

    def event(seconds, name, start, **meta):
        body = {"event": name, "containerStartTime": start}
        if meta:
            body["metadata"] = meta
        return msg(job["id"], seconds=seconds, workerLifecycleEvent=body)

    # Out of order, across two requests, with a retried duplicate.
    send(df, project, [event(130, "SDK_INSTALL_FINISH", second), event(2, "NETWORK_UP", first),
                       event(104, "STAGING_FILES_DOWNLOAD_START", second)])
    send(df, project, [event(1, "OS_START", first), event(110, "STAGING_FILES_DOWNLOAD_FINISH", second,
                                                          downloaded_bytes="123456"),
                       event(2, "NETWORK_UP", first)])
    w = registry.workers(job["id"])["w-1"]
    assert [g["containerStartTime"] for g in w["lifecycle"]] == [first, second]
    assert [e["event"] for e in w["lifecycle"][0]["events"]] == ["OS_START", "NETWORK_UP"]
    later = w["lifecycle"][1]["events"]
    assert [e["event"] for e in later] == ["STAGING_FILES_DOWNLOAD_START", "STAGING_FILES_DOWNLOAD_FINISH",
                                           "SDK_INSTALL_FINISH"]
    assert later[1]["metadata"] == {"downloaded_bytes": "123456"}
    assert w["lifecycle"][1]["startupDuration"] == "30s" and w["startupDuration"] == "30s"


def test_metrics_become_cpu_and_memory_series(df, project, registry):
    job = create_job(df, project)
    send(df, project, [
        msg(job["id"], seconds=20, workerMetrics={
            "cpuTime": [{"rate": 0.25, "totalMs": "2000", "timestamp": at(20)}],
            "memoryInfo": [{"currentRssBytes": "2048", "currentLimitBytes": "4096", "timestamp": at(20)}],
            "containers": {"sdk-0": {"cpuTime": [{"rate": 0.1, "timestamp": at(20)}]}}}),
        msg(job["id"], seconds=10, workerMetrics={"cpuTime": [{"rate": 0.75, "timestamp": at(10)},
                                                              {"rate": 0.5, "timestamp": at(15)}]}),
    ])
    series = registry.samples(job["id"], "w-1")
    cpu = [(s["time"], s["cpu"]["rate"]) for s in series if "cpu" in s and "container" not in s]
    assert cpu == [(at(10), 0.75), (at(15), 0.5), (at(20), 0.25)]
    assert [s["memory"]["currentRssBytes"] for s in series if "memory" in s] == ["2048"]
    assert [s["container"] for s in series if "container" in s] == ["sdk-0"]
    w = registry.workers(job["id"])["w-1"]
    assert w["lastCpu"]["rate"] == 0.25 and w["lastMemory"]["currentLimitBytes"] == "4096"


def test_other_reports_are_kept(df, project, registry):
    job = create_job(df, project)
    send(df, project, [
        msg(job["id"], seconds=1, dataSamplingReport={"elementsSampledCount": "3"}),
        msg(job["id"], seconds=2, dataSamplingReport={"elementsSampledCount": "4", "persistenceErrorsCount": "1"}),
        msg(job["id"], seconds=3, workerThreadScalingReport={"currentThreadCount": 8}),
        msg(job["id"], seconds=4, perWorkerMetrics={"perStepNamespaceMetrics": [{"originalStep": "s2"}]}),
    ])
    w = registry.workers(job["id"])["w-1"]
    assert w["dataSampling"]["elementsSampledCount"] == "7" and w["dataSampling"]["persistenceErrorsCount"] == "1"
    assert w["lastThreadScalingReport"] == {"currentThreadCount": 8, "time": at(3)}
    assert w["lastPerWorkerMetrics"]["perStepNamespaceMetrics"][0]["originalStep"] == "s2"


# ---- message codes -----------------------------------------------------------------------------

def test_message_codes_become_job_messages(df, project):
    job = create_job(df, project)
    send(df, project, [
        msg(job["id"], workerMessageCode={"code": "HARNESS_STARTED"}),
        msg(job["id"], worker="w-2", workerMessageCode={
            "code": "GCS_DOWNLOAD_ERROR", "parameters": {"object": "gs://b/staging/pipeline.pb", "attempts": 3}}),
        msg(job["id"], workerMessageCode={"code": "FLUX_CAPACITOR_LOW", "parameters": {"level": "1.21"}}),
        msg(job["id"], workerMessageCode={"code": "NEW_THING_FAILED"}),
    ])
    log = job_log(df, project, job["id"])
    assert ("JOB_MESSAGE_DETAILED", "Worker w-1: harness started") in log
    assert ("JOB_MESSAGE_ERROR", "Worker w-2: failed to download files from Cloud Storage "
            "(object=gs://b/staging/pipeline.pb, attempts=3)") in log
    assert ("JOB_MESSAGE_DETAILED", "Worker w-1 reported FLUX_CAPACITOR_LOW (level=1.21)") in log
    assert ("JOB_MESSAGE_ERROR", "Worker w-1 reported NEW_THING_FAILED") in log
    # Health reports alone write nothing to the job log.
    before = len(job_log(df, project, job["id"]))
    send(df, project, [msg(job["id"], seconds=s, workerHealthReport={"vmIsHealthy": True}) for s in range(5)])
    assert len(job_log(df, project, job["id"])) == before


def test_unhealthy_and_recovered_workers_are_logged_once(df, project, registry):
    job = create_job(df, project)
    send(df, project, [msg(job["id"], seconds=s, workerHealthReport={"vmIsHealthy": False, "msg": "disk slow"})
                       for s in (1, 2, 3)])
    assert registry.workers(job["id"])["w-1"]["state"] == "UNHEALTHY"
    send(df, project, [msg(job["id"], seconds=4, workerHealthReport={"vmIsHealthy": True})])
    log = [entry for entry in job_log(df, project, job["id"]) if "w-1" in entry[1]]
    assert log == [("JOB_MESSAGE_WARNING", "Worker w-1 reported it is unhealthy: disk slow"),
                   ("JOB_MESSAGE_DETAILED", "Worker w-1 is healthy again.")]


# ---- leases released -----------------------------------------------------------------------------

def test_broken_vm_releases_its_leases_at_once(df, project, registry):
    job = create_job(df, project)
    held = lease(df, project, job["id"], "w-1")
    assert held and not lease(df, project, job["id"], "w-2")  # one item, and w-1 holds it
    send(df, project, [msg(job["id"], seconds=5, workerHealthReport={
        "vmIsBroken": True, "vmBrokenCode": "KERNEL_PANIC", "msg": "oops"})])
    again = lease(df, project, job["id"], "w-2")
    assert [i["id"] for i in again] == [held[0]["id"]]
    w = registry.workers(job["id"])["w-1"]
    assert w["state"] == "LOST" and "KERNEL_PANIC" in w["stateReason"]
    assert ("JOB_MESSAGE_WARNING", "Worker w-1 reported that its VM is broken (KERNEL_PANIC): oops. "
            "Any work it held was released for retry.") in job_log(df, project, job["id"])


@pytest.mark.parametrize("reason, importance", [("PREEMPTION", "JOB_MESSAGE_WARNING"),
                                                ("UNKNOWN", "JOB_MESSAGE_DETAILED")])
def test_shutdown_notice_releases_its_leases(df, project, registry, reason, importance):
    job = create_job(df, project)
    held = lease(df, project, job["id"], "w-1")
    assert held
    out = send(df, project, [msg(job["id"], seconds=5, workerShutdownNotice={"reason": reason})])
    assert out == {"workerMessageResponses": [{}]}
    assert [i["id"] for i in lease(df, project, job["id"], "w-2")] == [held[0]["id"]]
    w = registry.workers(job["id"])["w-1"]
    assert w["state"] == "LOST" and w["shutdownNotice"] == {"reason": reason, "time": at(5)}
    texts = [t for imp, t in job_log(df, project, job["id"]) if imp == importance and "Worker w-1" in t]
    assert len(texts) == 1 and ("preempted" in texts[0]) == (reason == "PREEMPTION")
    # A late health report from before the notice does not bring the worker back.
    send(df, project, [msg(job["id"], seconds=4, workerHealthReport={"vmIsHealthy": True})])
    assert registry.workers(job["id"])["w-1"]["state"] == "LOST"


# ---- silence and back-pressure, on a server with short intervals -------------------------------------

@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """Health every 0.5s, and always busy (one request in flight is enough), with a factor of 2:
    workers are told to report every 1s, so silence shows after 3s."""
    srv = start_server(tmp_path_factory.mktemp("quick"), env={
        "HEADRACE_HEALTH_INTERVAL": "0.5", "HEADRACE_BUSY_REQUESTS": "1", "HEADRACE_BUSY_INTERVAL_FACTOR": "2"})
    reg = Registry(srv)
    try:
        yield srv, discovery_client(srv.url), reg
    finally:
        reg.store.close()
        srv.stop()


def test_busy_service_asks_for_longer_intervals(quick, project, check):
    _, qdf, _ = quick
    job = create_job(qdf, project)
    out = send(qdf, project, [msg(job["id"], workerHealthReport={"vmIsHealthy": True, "reportInterval": "0.5s"})])
    check(out, "SendWorkerMessagesResponse")
    assert out["workerMessageResponses"][0]["workerHealthReportResponse"]["reportInterval"] == "1s"


def test_silent_worker_is_lost_and_its_leases_released(quick, project):
    _, qdf, reg = quick
    job = create_job(qdf, project)
    held = lease(qdf, project, job["id"], "w-1")
    send(qdf, project, [msg(job["id"], workerHealthReport={"vmIsHealthy": True, "reportInterval": "0.5s"}),
                        msg(job["id"], worker="w-quiet", workerMessageCode={"code": "HARNESS_STARTED"})])
    assert reg.workers(job["id"])["w-1"]["livenessInterval"] == "1s"
    wait_for(lambda: reg.workers(job["id"])["w-1"]["state"] == "LOST", "w-1 to be marked lost")
    w = reg.workers(job["id"])["w-1"]
    assert w["stateReason"] == "NO_REPORTS" and w["previousState"] == "HEALTHY"
    log = job_log(qdf, project, job["id"])
    lost = [t for imp, t in log if imp == "JOB_MESSAGE_WARNING" and t.startswith("Worker w-1 lost contact")]
    assert len(lost) == 1 and "3 report intervals of 1s" in lost[0]
    # Its lease went back to the pool.
    assert [i["id"] for i in lease(qdf, project, job["id"], "w-2")] == [held[0]["id"]]
    # A worker that never sent a health report has no interval to miss.
    assert reg.workers(job["id"])["w-quiet"]["state"] == "HEALTHY"
    # Reporting again brings it back.
    send(qdf, project, [msg(job["id"], seconds=1, workerHealthReport={"vmIsHealthy": True})])
    assert reg.workers(job["id"])["w-1"]["state"] == "HEALTHY"
    assert ("JOB_MESSAGE_DETAILED", "Worker w-1 is reporting again.") in job_log(qdf, project, job["id"])


def test_workers_of_a_finished_job_stop_quietly(quick, project):
    _, qdf, reg = quick
    job = create_job(qdf, project)
    send(qdf, project, [msg(job["id"], workerHealthReport={"vmIsHealthy": True})])
    qdf.projects().locations().jobs().update(projectId=project, location=REGION, jobId=job["id"],
                                              body={"requestedState": "JOB_STATE_DONE"}).execute()
    wait_for(lambda: reg.workers(job["id"])["w-1"]["state"] == "STOPPED", "w-1 to be stopped")
    assert reg.workers(job["id"])["w-1"]["stateReason"] == "JOB_ENDED"
    assert not [t for imp, t in job_log(qdf, project, job["id"]) if imp == "JOB_MESSAGE_WARNING"]
