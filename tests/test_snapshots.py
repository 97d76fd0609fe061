"""Snapshots of streaming jobs through googleapiclient and GAPIC REST: creation rules, the
PENDING → RUNNING → READY / FAILED lifecycle, listing, deletion and ttl expiry."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import pytest
from googleapiclient.errors import HttpError

from headrace import wire
from tests.conftest import discovery_client, start_server

REGION = "us-central1"


def running_job(df, project: str, job_type: str = "JOB_TYPE_STREAMING", location: str = REGION) -> dict:
    """A job moved to JOB_STATE_RUNNING the way Dataflow's are: a worker leases its work."""
    jobs = df.projects().locations().jobs()
    job = jobs.create(projectId=project, location=location,
                      body={"name": f"stream-{uuid.uuid4().hex[:8]}", "type": job_type}).execute()
    jobs.workItems().lease(projectId=project, location=location, jobId=job["id"], body={
        "workerId": "w-1", "requestedLeaseDuration": "300s", "currentWorkerTime": _now(),
        "workItemTypes": ["streaming_setup_task"]}).execute()
    got = jobs.get(projectId=project, location=location, jobId=job["id"]).execute()
    assert got["currentState"] == "JOB_STATE_RUNNING"
    return got


def _now() -> str:
    return wire.format_time(wire.now())


def take(df, project: str, job_id: str, location: str = REGION, **body) -> dict:
    return df.projects().locations().jobs().snapshot(projectId=project, location=location,
                                                     jobId=job_id, body=body).execute()


def get(df, project: str, snapshot_id: str, location: str = REGION) -> dict:
    return df.projects().locations().snapshots().get(projectId=project, location=location,
                                                     snapshotId=snapshot_id).execute()


def wait_for_state(df, project: str, snapshot_id: str, states: set[str], timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        snap = get(df, project, snapshot_id)
        if snap["state"] in states or time.monotonic() > deadline:
            return snap
        time.sleep(0.05)


def error_of(excinfo) -> dict:
    return json.loads(excinfo.value.content)["error"]


def test_snapshot_of_a_running_streaming_job_becomes_ready(df, gapic, project, check):
    job = running_job(df, project)
    snap = take(df, project, job["id"], ttl="3600s", description="before the upgrade")
    check(snap, "Snapshot")
    assert snap["state"] in ("PENDING", "RUNNING")
    assert snap["sourceJobId"] == job["id"] and snap["projectId"] == project
    assert snap["region"] == REGION and snap["ttl"] == "3600s"
    assert snap["description"] == "before the upgrade"
    assert "diskSizeBytes" not in snap  # only READY snapshots have a size
    uuid.UUID(snap["id"])
    created = wire.parse_time(snap["creationTime"])
    assert abs(created - wire.now()) < timedelta(minutes=1)

    seen = set()
    deadline = time.monotonic() + 15
    while (state := get(df, project, snap["id"])["state"]) != "READY" and time.monotonic() < deadline:
        seen.add(state)
        time.sleep(0.02)
    assert state == "READY" and seen <= {"PENDING", "RUNNING"}
    ready = get(df, project, snap["id"])
    check(ready, "Snapshot")
    assert ready["diskSizeBytes"] == "0"
    assert {k: v for k, v in ready.items() if k not in ("state", "diskSizeBytes")} == \
        {k: v for k, v in snap.items() if k != "state"}

    # The project-level alias and GAPIC see the same record.
    alias = df.projects().snapshots().get(projectId=project, snapshotId=snap["id"]).execute()
    assert alias == ready
    from google.cloud import dataflow_v1beta3 as dataflow
    via_gapic = gapic["snapshots"].get_snapshot(
        dataflow.GetSnapshotRequest(project_id=project, location=REGION, snapshot_id=snap["id"]))
    assert via_gapic.state == dataflow.SnapshotState.READY and via_gapic.source_job_id == job["id"]

    texts = [m["messageText"] for m in df.projects().locations().jobs().messages().list(
        projectId=project, location=REGION, jobId=job["id"]).execute()["jobMessages"]]
    assert f"Snapshot {snap['id']} is ready." in texts


def test_ttl_defaults_to_seven_days_and_project_level_snapshot_takes_location(df, project, check):
    job = running_job(df, project, location="europe-west1")
    snap = df.projects().jobs().snapshot(projectId=project, jobId=job["id"],
                                         body={"location": "europe-west1"}).execute()
    check(snap, "Snapshot")
    assert snap["ttl"] == "604800s" and snap["region"] == "europe-west1"
    got = df.projects().snapshots().get(projectId=project, snapshotId=snap["id"],
                                        location="europe-west1").execute()
    assert got["id"] == snap["id"]
    # Without a location the project-level alias works in us-central1, where it is not.
    with pytest.raises(HttpError) as err:
        df.projects().snapshots().get(projectId=project, snapshotId=snap["id"]).execute()
    assert err.value.status_code == 404


@pytest.mark.parametrize("case", ["batch", "pending", "terminated"])
def test_only_a_running_streaming_job_can_be_snapshotted(df, project, case):
    jobs = df.projects().locations().jobs()
    if case == "batch":
        job = running_job(df, project, job_type="JOB_TYPE_BATCH")
    elif case == "pending":
        job = jobs.create(projectId=project, location=REGION,
                          body={"name": "idle", "type": "JOB_TYPE_STREAMING"}).execute()
    else:
        job = running_job(df, project)
        jobs.update(projectId=project, location=REGION, jobId=job["id"],
                    body={"requestedState": "JOB_STATE_DONE"}).execute()
    with pytest.raises(HttpError) as err:
        take(df, project, job["id"])
    assert err.value.status_code == 400
    error = error_of(err)
    assert error["status"] == "FAILED_PRECONDITION"
    assert job["id"] in error["message"]
    assert ("batch" in error["message"]) if case == "batch" else ("JOB_STATE_RUNNING" in error["message"])
    listed = df.projects().locations().snapshots().list(projectId=project, location=REGION).execute()
    assert listed.get("snapshots", []) == []


def test_unknown_job_and_bad_ttl_are_refused(df, project):
    with pytest.raises(HttpError) as err:
        take(df, project, "2026-01-01_00_00_00-1")
    assert err.value.status_code == 404
    job = running_job(df, project)
    for ttl in ("-5s", "0s"):
        with pytest.raises(HttpError) as err:
            take(df, project, job["id"], ttl=ttl)
        assert err.value.status_code == 400 and error_of(err)["status"] == "INVALID_ARGUMENT"
        assert "ttl" in error_of(err)["message"]


def test_list_by_location_by_job_and_through_the_job(df, gapic, project, check):
    first, second = running_job(df, project), running_job(df, project)
    a = take(df, project, first["id"])
    b = take(df, project, second["id"])
    c = take(df, project, first["id"])
    elsewhere = running_job(df, project, location="asia-east1")
    take(df, project, elsewhere["id"], location="asia-east1")

    snapshots = df.projects().locations().snapshots()
    listed = snapshots.list(projectId=project, location=REGION).execute()
    check(listed, "ListSnapshotsResponse")
    assert [s["id"] for s in listed["snapshots"]] == [c["id"], b["id"], a["id"]]  # newest first
    by_job = snapshots.list(projectId=project, location=REGION, jobId=first["id"]).execute()
    assert [s["id"] for s in by_job["snapshots"]] == [c["id"], a["id"]]
    through_job = df.projects().locations().jobs().snapshots().list(
        projectId=project, location=REGION, jobId=first["id"]).execute()
    assert [s["id"] for s in through_job["snapshots"]] == [c["id"], a["id"]]
    alias = df.projects().snapshots().list(projectId=project, jobId=second["id"]).execute()
    assert [s["id"] for s in alias["snapshots"]] == [b["id"]]
    from google.cloud import dataflow_v1beta3 as dataflow
    reply = gapic["snapshots"].list_snapshots(
        dataflow.ListSnapshotsRequest(project_id=project, location=REGION))
    assert [s.id for s in reply.snapshots] == [c["id"], b["id"], a["id"]]
    # Another project sees none of them.
    assert snapshots.list(projectId=f"{project}-other", location=REGION).execute().get("snapshots", []) == []
    with pytest.raises(HttpError) as err:
        df.projects().locations().jobs().snapshots().list(
            projectId=project, location=REGION, jobId="2026-01-01_00_00_00-9").execute()
    assert err.value.status_code == 404


def test_delete_and_the_project_level_delete(df, http, project, check):
    job = running_job(df, project)
    one, two = take(df, project, job["id"]), take(df, project, job["id"])
    snapshots = df.projects().locations().snapshots()
    gone = snapshots.delete(projectId=project, location=REGION, snapshotId=one["id"]).execute()
    check(gone, "DeleteSnapshotResponse")
    assert gone == {}
    response = http.delete(f"/v1b3/projects/{project}/snapshots",
                           params={"location": REGION, "snapshotId": two["id"]})
    assert response.status_code == 200 and response.json() == {}
    for snap in (one, two):
        with pytest.raises(HttpError) as err:
            get(df, project, snap["id"])
        assert err.value.status_code == 404 and error_of(err)["status"] == "NOT_FOUND"
        with pytest.raises(HttpError) as err:
            snapshots.delete(projectId=project, location=REGION, snapshotId=snap["id"]).execute()
        assert err.value.status_code == 404
    assert snapshots.list(projectId=project, location=REGION).execute().get("snapshots", []) == []
    missing = http.delete(f"/v1b3/projects/{project}/snapshots", params={"location": REGION})
    assert missing.status_code == 400 and "snapshotId" in missing.json()["error"]["message"]


def test_a_snapshot_disappears_when_its_ttl_ends(df, project):
    job = running_job(df, project)
    short = take(df, project, job["id"], ttl="3s")
    kept = take(df, project, job["id"], ttl="3600s")
    deadline = wire.parse_time(short["creationTime"]) + timedelta(seconds=3)
    assert get(df, project, short["id"])["id"] == short["id"]
    while wire.now() < deadline + timedelta(seconds=5):
        try:
            get(df, project, short["id"])
        except HttpError as err:
            assert err.status_code == 404
            break
        time.sleep(0.05)
    else:
        pytest.fail("the snapshot outlived its ttl")
    assert wire.now() >= deadline
    listed = df.projects().locations().snapshots().list(projectId=project, location=REGION).execute()
    assert [s["id"] for s in listed["snapshots"]] == [kept["id"]]


def test_snapshot_fails_when_its_job_terminates_before_ready(tmp_path, project):
    # Slow sweeps, so the job ends before the two sweeps a snapshot needs to become READY.
    server = start_server(tmp_path, env={"HEADRACE_SWEEP_SECONDS": "2"})
    try:
        df = discovery_client(server.url)
        job = running_job(df, project)
        snap = take(df, project, job["id"])
        df.projects().locations().jobs().update(projectId=project, location=REGION, jobId=job["id"],
                                                body={"requestedState": "JOB_STATE_DONE"}).execute()
        failed = wait_for_state(df, project, snap["id"], {"READY", "FAILED"})
        assert failed["state"] == "FAILED" and "diskSizeBytes" not in failed
        messages = df.projects().locations().jobs().messages().list(
            projectId=project, location=REGION, jobId=job["id"],
            minimumImportance="JOB_MESSAGE_WARNING").execute()["jobMessages"]
        assert any(snap["id"] in m["messageText"] and "failed" in m["messageText"] for m in messages)
    finally:
        server.stop()
