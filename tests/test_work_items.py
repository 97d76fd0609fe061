"""workItems:lease and workItems:reportStatus: Dataflow's lease protocol, end to end."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from googleapiclient.errors import HttpError

from tests.conftest import discovery_client, start_server, wait_for

REGION = "us-central1"


# ---- helpers ----------------------------------------------------------------------------------


def create_job(df, project, name="wi", location=REGION, **fields):
    return df.projects().locations().jobs().create(
        projectId=project, location=location, body={"name": name, **fields}).execute()


def lease(df, project, worker, job_id="-", location=REGION, **body):
    return df.projects().locations().jobs().workItems().lease(
        projectId=project, location=location, jobId=job_id, body={"workerId": worker, **body}).execute()


def lease_one(df, project, worker, job_id="-", **body):
    items = lease(df, project, worker, job_id, **body).get("workItems", [])
    assert len(items) == 1, items
    return items[0]


def report(df, item, worker, location=REGION, **status):
    status = {"workItemId": item["id"], **status}
    out = df.projects().locations().jobs().workItems().reportStatus(
        projectId=item["projectId"], location=location, jobId=item["jobId"],
        body={"workerId": worker, "workItemStatuses": [status]}).execute()
    assert len(out["workItemServiceStates"]) == 1
    return out["workItemServiceStates"][0]


def get_job(df, project, job_id, location=REGION):
    return df.projects().locations().jobs().get(projectId=project, location=location, jobId=job_id,
                                                view="JOB_VIEW_ALL").execute()


def messages(df, project, job_id, location=REGION):
    out = df.projects().locations().jobs().messages().list(
        projectId=project, location=location, jobId=job_id, pageSize=1000).execute()
    return out.get("jobMessages", [])


def error_of(excinfo):
    return json.loads(excinfo.value.content)["error"]


def stage_states(job):
    return {s["executionStageName"]: s["executionStageState"] for s in job.get("stageStates", [])}


# ---- leasing ------------------------------------------------------------------------------------


def test_lease_hands_out_the_item_once_and_starts_the_job(df, project, check):
    job = create_job(df, project)
    out = lease(df, project, "w1", job["id"], workItemTypes=["beam_portable_pipeline"],
                workerCapabilities=["w1"], currentWorkerTime="2026-01-02T03:04:05Z")
    check(out, "LeaseWorkItemResponse")
    [item] = out["workItems"]
    assert item["jobId"] == job["id"] and item["projectId"] == project
    assert json.loads(item["configuration"])["stageId"] == "S01"
    assert int(item["initialReportIndex"]) > 0
    assert item["leaseExpireTime"] > job["createTime"]
    assert item["reportStatusInterval"].endswith("s")
    running = get_job(df, project, job["id"])
    assert running["currentState"] == "JOB_STATE_RUNNING"
    check(running, "Job")
    assert stage_states(running) == {"S01": "JOB_STATE_RUNNING"}
    assert "Workers have started successfully." in [m["messageText"] for m in messages(df, project, job["id"])]
    # The item is held: nobody else gets it.
    again = lease(df, project, "w2", job["id"])
    check(again, "LeaseWorkItemResponse")
    assert again == {}


def test_requested_lease_duration_is_honoured_and_capped(df, project):
    create_job(df, project)
    item = lease_one(df, project, "w1", requestedLeaseDuration="45s")
    assert item["reportStatusInterval"] == "10s"  # the configured interval, below half the lease
    short = report(df, item, "w1", reportIndex=item["initialReportIndex"], requestedLeaseDuration="4s")
    assert short["reportStatusInterval"] == "2s"  # twice per lease at least
    assert short["leaseExpireTime"] < item["leaseExpireTime"]
    long = report(df, item, "w1", reportIndex=short["nextReportIndex"], requestedLeaseDuration="86400s")
    lease_end = time.time() + 86400 / 2  # far below a day: the cap applies
    from headrace import wire

    assert wire.parse_time(long["leaseExpireTime"]).timestamp() < lease_end
    with pytest.raises(HttpError) as err:
        lease(df, project, "w1", requestedLeaseDuration="-5s")
    assert err.value.status_code == 400 and "must not be negative" in error_of(err)["message"]


def test_lease_errors(df, project):
    with pytest.raises(HttpError) as err:
        lease(df, project, "w1", "2026-01-01_00_00_00-1")
    assert err.value.status_code == 404 and error_of(err)["status"] == "NOT_FOUND"
    job = create_job(df, project)
    with pytest.raises(HttpError) as err:
        df.projects().locations().jobs().workItems().lease(
            projectId=project, location=REGION, jobId=job["id"], body={}).execute()
    assert err.value.status_code == 400 and "workerId is required" in error_of(err)["message"]
    # A job in another region is not found through this one.
    with pytest.raises(HttpError) as err:
        lease(df, project, "w1", job["id"], location="europe-west1")
    assert err.value.status_code == 404


def test_wildcards_lease_from_any_job_in_scope(df, project):
    here = create_job(df, project, name="here")
    there = create_job(df, project, name="there", location="europe-west1")
    assert lease(df, project, "w0", location="asia-east1") == {}
    one = lease_one(df, project, "w1", location="europe-west1")
    assert one["jobId"] == there["id"]
    two = lease_one(df, project, "w2", location="-")
    assert two["jobId"] == here["id"]
    assert lease(df, project, "w3", location="-") == {}
    # Each job started, wherever it lives.
    assert get_job(df, project, there["id"], "europe-west1")["currentState"] == "JOB_STATE_RUNNING"
    assert get_job(df, project, here["id"])["currentState"] == "JOB_STATE_RUNNING"
    # A worker that leased through a wildcard reports on the item through one too.
    state = report(df, one, "w1", location="-", reportIndex=one["initialReportIndex"])
    assert state["nextReportIndex"] == str(int(one["initialReportIndex"]) + 1)


def test_concurrent_workers_never_share_an_item(server, df, project):
    made = {create_job(df, project, name=f"job-{i}")["id"] for i in range(6)}
    leased: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(name):
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(4):
                out = client.post(f"/v1b3/projects/{project}/locations/-/jobs/-/workItems:lease",
                                  json={"workerId": name}).json()
                with lock:
                    leased.extend((name, i["id"]) for i in out.get("workItems", []))

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [item_id for _, item_id in leased]
    assert len(ids) == len(set(ids)) == 6  # every item exactly once, 32 lease calls
    jobs = {get_job(df, project, job_id)["currentState"] for job_id in made}
    assert jobs == {"JOB_STATE_RUNNING"}


def test_project_level_aliases(df, project, check):
    job = df.projects().jobs().create(projectId=project, body={"name": "alias"}).execute()
    items = df.projects().jobs().workItems()
    out = items.lease(projectId=project, jobId=job["id"], body={"workerId": "w1", "location": REGION}).execute()
    check(out, "LeaseWorkItemResponse")
    [item] = out["workItems"]
    answer = items.reportStatus(projectId=project, jobId=job["id"], body={
        "workerId": "w1", "workItemStatuses": [{"workItemId": item["id"], "reportIndex": item["initialReportIndex"],
                                                "completed": True}]}).execute()
    check(answer, "ReportWorkItemStatusResponse")
    assert get_job(df, project, job["id"])["currentState"] == "JOB_STATE_DONE"


# ---- reporting ------------------------------------------------------------------------------------


def test_report_renews_the_lease_and_checks_the_report_index(df, project, check):
    job = create_job(df, project)
    item = lease_one(df, project, "w1", job["id"], requestedLeaseDuration="20s")
    first = int(item["initialReportIndex"])
    status = {"reportIndex": str(first), "requestedLeaseDuration": "60s",
              "reportedProgress": {"fractionConsumed": 0.25}}
    answer = report(df, item, "w1", **status)
    check(answer, "WorkItemServiceState")
    assert answer["nextReportIndex"] == str(first + 1)
    assert answer["leaseExpireTime"] > item["leaseExpireTime"]  # renewed, and longer
    assert "completeWorkStatus" not in answer
    # A retried identical report is answered as before and changes nothing.
    assert report(df, item, "w1", **status) == answer
    # The same index with other contents is refused, as is an index out of sequence.
    with pytest.raises(HttpError) as err:
        report(df, item, "w1", **(status | {"reportedProgress": {"fractionConsumed": 0.5}}))
    assert err.value.status_code == 409 and error_of(err)["status"] == "ABORTED"
    assert "already received with other contents" in error_of(err)["message"]
    for wrong in (first + 5, first - 1, 0):
        with pytest.raises(HttpError) as err:
            report(df, item, "w1", reportIndex=str(wrong))
        assert err.value.status_code == 409
        assert f"expects {first + 1}" in error_of(err)["message"]
    # The index the answer gave still works.
    nxt = report(df, item, "w1", reportIndex=answer["nextReportIndex"])
    assert nxt["nextReportIndex"] == str(first + 2)


def test_report_from_a_worker_without_the_lease_is_rejected(df, project):
    job = create_job(df, project)
    item = lease_one(df, project, "w1", job["id"])
    with pytest.raises(HttpError) as err:
        report(df, item, "intruder", reportIndex=item["initialReportIndex"])
    assert err.value.status_code == 400 and error_of(err)["status"] == "FAILED_PRECONDITION"
    assert "does not hold the lease" in error_of(err)["message"]
    with pytest.raises(HttpError) as err:
        report(df, item | {"id": "999999999"}, "w1", reportIndex=item["initialReportIndex"])
    assert err.value.status_code == 404
    # The holder is unaffected.
    assert report(df, item, "w1", reportIndex=item["initialReportIndex"])["nextReportIndex"]


def test_completed_item_finishes_stage_and_job(df, project):
    job = create_job(df, project)
    item = lease_one(df, project, "w1", job["id"])
    done = {"reportIndex": item["initialReportIndex"], "completed": True,
            "reportedProgress": {"fractionConsumed": 1.0}}
    answer = report(df, item, "w1", **done)
    assert answer["nextReportIndex"] == str(int(item["initialReportIndex"]) + 1)
    final = get_job(df, project, job["id"])
    assert final["currentState"] == "JOB_STATE_DONE"
    assert stage_states(final) == {"S01": "JOB_STATE_DONE"}
    # The worker may not have heard the answer: its retry gets the same one.
    assert report(df, item, "w1", **done) == answer
    # Any other report on it is told to stop, or refused if its sender never held the item.
    late = report(df, item, "w1", reportIndex=answer["nextReportIndex"])
    assert late["completeWorkStatus"]["code"] == 1
    with pytest.raises(HttpError) as err:
        report(df, item, "w2", reportIndex=answer["nextReportIndex"])
    assert "has ended (DONE)" in error_of(err)["message"]
    assert lease(df, project, "w2", job["id"]) == {}


def test_failed_attempts_retry_then_fail_the_job(df, project):
    job = create_job(df, project)
    workers = [f"worker-{n}" for n in range(4)]
    for n, worker in enumerate(workers):
        item = lease_one(df, project, worker, job["id"])
        answer = report(df, item, worker, reportIndex=item["initialReportIndex"], completed=True,
                        errors=[{"code": 2, "message": f"Traceback: ValueError boom {n}"}])
        assert answer["nextReportIndex"]
        state = get_job(df, project, job["id"])["currentState"]
        assert state == ("JOB_STATE_FAILED" if n == 3 else "JOB_STATE_RUNNING")
    texts = [(m["messageImportance"], m["messageText"]) for m in messages(df, project, job["id"])]
    for n in range(4):
        assert ("JOB_MESSAGE_ERROR", f"Traceback: ValueError boom {n}") in texts
    [failure] = [t for i, t in texts if "Workflow failed" in t]
    assert "The job failed because a work item has failed 4 times. Look in previous log entries" in failure
    assert all(w in failure for w in workers)
    final = get_job(df, project, job["id"])
    assert stage_states(final) == {"S01": "JOB_STATE_FAILED"}
    assert lease(df, project, "worker-5", job["id"]) == {}


def test_lost_leases_return_to_the_pool_then_fail_the_job(df, project):
    job = create_job(df, project)
    workers = [f"lost-{n}" for n in range(4)]
    item = lease_one(df, project, workers[0], job["id"], requestedLeaseDuration="0.2s")
    for worker in workers[1:]:
        item = wait_for(lambda w=worker: lease(df, project, w, job["id"], requestedLeaseDuration="0.2s")
                        .get("workItems", [None])[0], f"the item to return for {worker}")
    # The first holder lost its lease: its reports are refused.
    with pytest.raises(HttpError) as err:
        report(df, item, workers[0], reportIndex=item["initialReportIndex"])
    assert error_of(err)["status"] == "FAILED_PRECONDITION"
    final = wait_for(lambda: (j := get_job(df, project, job["id"]))["currentState"] == "JOB_STATE_FAILED" and j,
                     "the job to fail")
    assert stage_states(final) == {"S01": "JOB_STATE_FAILED"}
    texts = [m["messageText"] for m in messages(df, project, job["id"])]
    [failure] = [t for t in texts if "Workflow failed" in t]
    assert ("A work item was attempted 4 times without success. Each time the worker eventually lost "
            "contact with the service. The work item was attempted on:") in failure
    assert all(w in failure for w in workers)
    assert sum("Lost contact with worker" in t for t in texts) == 4


def test_cancel_tells_the_holder_to_stop(df, project):
    job = create_job(df, project)
    item = lease_one(df, project, "w1", job["id"])
    jobs = df.projects().locations().jobs()
    jobs.update(projectId=project, location=REGION, jobId=job["id"],
                body={"requestedState": "JOB_STATE_CANCELLED"}).execute()
    answer = report(df, item, "w1", reportIndex=item["initialReportIndex"])
    assert answer["completeWorkStatus"]["code"] == 1 and "cancelled" in answer["completeWorkStatus"]["message"]
    assert get_job(df, project, job["id"])["currentState"] == "JOB_STATE_CANCELLING"  # the item is still held
    assert lease(df, project, "w2", job["id"]) == {}
    report(df, item, "w1", reportIndex=answer["nextReportIndex"], completed=True)
    final = get_job(df, project, job["id"])
    assert final["currentState"] == "JOB_STATE_CANCELLED"
    assert stage_states(final) == {"S01": "JOB_STATE_CANCELLED"}


def test_drain_tells_the_holder_to_finish(df, project):
    job = create_job(df, project, type="JOB_TYPE_STREAMING")
    item = lease_one(df, project, "w1", job["id"])
    df.projects().locations().jobs().update(projectId=project, location=REGION, jobId=job["id"],
                                            body={"requestedState": "JOB_STATE_DRAINED"}).execute()
    answer = report(df, item, "w1", reportIndex=item["initialReportIndex"])
    assert answer["completeWorkStatus"]["code"] == 1 and "drained" in answer["completeWorkStatus"]["message"]
    report(df, item, "w1", reportIndex=answer["nextReportIndex"], completed=True)
    final = get_job(df, project, job["id"])
    assert final["currentState"] == "JOB_STATE_DRAINED"
    assert stage_states(final) == {"S01": "JOB_STATE_DRAINED"}


def test_a_job_ended_under_its_worker_tells_it_to_stop(df, project):
    job = create_job(df, project)
    item = lease_one(df, project, "w1", job["id"])
    df.projects().locations().jobs().update(projectId=project, location=REGION, jobId=job["id"],
                                            body={"requestedState": "JOB_STATE_DONE"}).execute()
    answer = report(df, item, "w1", reportIndex=item["initialReportIndex"])
    assert answer["completeWorkStatus"]["code"] == 1
    assert "JOB_STATE_DONE" in answer["completeWorkStatus"]["message"]


# ---- a server of its own: configured defaults and the all-wildcard pool lease ------------------


def test_pool_lease_across_projects_with_configured_limits(tmp_path):
    srv = start_server(tmp_path, env={"HEADRACE_LEASE_SECONDS": "3", "HEADRACE_MAX_ATTEMPTS": "2"})
    try:
        df = discovery_client(srv.url)
        where = {create_job(df, p, location=loc)["id"]: (p, loc) for p, loc in (("pa", REGION), ("pb", "europe-west1"))}
        pool = df.projects().locations().jobs().workItems()
        got = []
        for worker in ("pool-1", "pool-2", "pool-3"):
            out = pool.lease(projectId="-", location="-", jobId="-", body={"workerId": worker}).execute()
            got += out.get("workItems", [])
        assert {i["jobId"]: i["projectId"] for i in got} == {j: p for j, (p, _) in where.items()}
        assert {i["reportStatusInterval"] for i in got} == {"1.5s"}  # half the configured 3s lease
        # Two failed attempts are the limit here.
        item = got[0]
        project, location = where[item["jobId"]]
        report(df, item, "pool-1", location="-", reportIndex=item["initialReportIndex"], completed=True,
               errors=[{"message": "first"}])
        again = lease_one(df, project, "pool-4", item["jobId"], location="-")
        report(df, again, "pool-4", location="-", reportIndex=again["initialReportIndex"], completed=True,
               errors=[{"message": "second"}])
        assert get_job(df, project, item["jobId"], location)["currentState"] == "JOB_STATE_FAILED"
        texts = [m["messageText"] for m in messages(df, project, item["jobId"], location)]
        assert any("a work item has failed 2 times" in t and "pool-1" in t and "pool-4" in t for t in texts)
    finally:
        srv.stop()


# ---- metrics ride on reports ------------------------------------------------------------------


def test_reported_metrics_count_once_per_report(df, project):
    job = create_job(df, project)
    item = lease_one(df, project, "w1", job["id"])
    rows = {"name": {"origin": "user", "name": "rows", "context": {"step": "s1", "namespace": "ns"}},
            "kind": "Sum", "scalar": 5}
    first = report(df, item, "w1", reportIndex=item["initialReportIndex"], metricUpdates=[rows])
    report(df, item, "w1", reportIndex=item["initialReportIndex"], metricUpdates=[rows])  # a retry
    second = report(df, item, "w1", reportIndex=first["nextReportIndex"], metricUpdates=[rows])
    # A request with one refused status applies none of its statuses.
    bad = {"workerId": "w1", "workItemStatuses": [
        {"workItemId": item["id"], "reportIndex": second["nextReportIndex"], "metricUpdates": [rows]},
        {"workItemId": item["id"], "reportIndex": "1"}]}
    with pytest.raises(HttpError) as err:
        df.projects().locations().jobs().workItems().reportStatus(
            projectId=project, location=REGION, jobId=job["id"], body=bad).execute()
    assert err.value.status_code == 409
    metrics = df.projects().locations().jobs().getMetrics(projectId=project, location=REGION,
                                                          jobId=job["id"]).execute()["metrics"]
    values = {m["scalar"] for m in metrics if m["name"]["name"] == "rows"}
    assert values == {10}
    # The refused request left the index where it was.
    assert report(df, item, "w1", reportIndex=second["nextReportIndex"])["nextReportIndex"]
