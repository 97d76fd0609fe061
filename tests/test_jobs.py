"""jobs.create / get / list / aggregated / update through googleapiclient and GAPIC REST."""

from __future__ import annotations

import re

import pytest
from google.api_core import exceptions
from googleapiclient.errors import HttpError

REGION = "us-central1"


def create(df, project, name="wordcount", location=REGION, **fields):
    body = {"name": name, **fields}
    return df.projects().locations().jobs().create(projectId=project, location=location, body=body).execute()


def error_of(excinfo):
    import json

    return json.loads(excinfo.value.content)["error"]


def test_create_returns_dataflow_shaped_job(df, project, check):
    job = create(df, project, clientRequestId="req-1", labels={"team": "data"})
    check(job, "Job")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}_\d{2}_\d{2}_\d{2}-\d+", job["id"])
    assert job["projectId"] == project and job["location"] == REGION
    assert job["currentState"] == "JOB_STATE_PENDING"
    assert job["createTime"] and job["clientRequestId"] == "req-1"
    got = df.projects().locations().jobs().get(projectId=project, location=REGION, jobId=job["id"]).execute()
    check(got, "Job")
    assert got["id"] == job["id"] and got["labels"] == {"team": "data"}


@pytest.mark.parametrize("name", ["Bad", "1abc", "abc-", "a_b", ""])
def test_invalid_names_are_rejected(df, project, name):
    with pytest.raises(HttpError) as err:
        create(df, project, name=name)
    assert err.value.status_code == 400
    assert error_of(err)["status"] == "INVALID_ARGUMENT"


def test_second_active_job_with_same_name_conflicts(df, project):
    first = create(df, project, name="dup", clientRequestId="a")
    with pytest.raises(HttpError) as err:
        create(df, project, name="dup", clientRequestId="b")
    assert err.value.status_code == 409
    error = error_of(err)
    assert error["status"] == "ALREADY_EXISTS"
    assert "There is already an active job named dup" in error["message"]
    assert first["id"] in error["message"]
    # Same clientRequestId: an idempotent retry returns the existing job.
    again = create(df, project, name="dup", clientRequestId="a")
    assert again["id"] == first["id"]
    # Another region may hold a job of the same name.
    assert create(df, project, name="dup", location="europe-west1")["id"] != first["id"]


def test_name_is_free_again_once_the_job_terminated(df, project):
    first = create(df, project, name="again")
    jobs = df.projects().locations().jobs()
    jobs.update(projectId=project, location=REGION, jobId=first["id"],
                body={"requestedState": "JOB_STATE_DONE"}).execute()
    assert create(df, project, name="again")["id"] != first["id"]


def test_replace_job_id_moves_old_job_to_updated(df, project):
    old = create(df, project, name="streamer", type="JOB_TYPE_STREAMING")
    new = df.projects().locations().jobs().create(
        projectId=project, location=REGION, replaceJobId=old["id"],
        body={"name": "streamer", "type": "JOB_TYPE_STREAMING"}).execute()
    got = df.projects().locations().jobs().get(projectId=project, location=REGION, jobId=old["id"]).execute()
    assert got["currentState"] == "JOB_STATE_UPDATED"
    assert got["replacedByJobId"] == new["id"]
    assert new["replaceJobId"] == old["id"]


def test_cancel_moves_through_cancelling_to_cancelled(df, project):
    job = create(df, project)
    jobs = df.projects().locations().jobs()
    updated = jobs.update(projectId=project, location=REGION, jobId=job["id"],
                          body={"requestedState": "JOB_STATE_CANCELLED"}).execute()
    assert updated["currentState"] in ("JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED")
    assert updated["requestedState"] == "JOB_STATE_CANCELLED"
    # Nobody holds its work, so the sweeper finishes the cancel promptly.
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = jobs.get(projectId=project, location=REGION, jobId=job["id"]).execute()
        if got["currentState"] == "JOB_STATE_CANCELLED":
            break
        time.sleep(0.1)
    assert got["currentState"] == "JOB_STATE_CANCELLED"
    assert got["currentStateTime"] >= updated["currentStateTime"]
    with pytest.raises(HttpError) as err:
        jobs.update(projectId=project, location=REGION, jobId=job["id"],
                    body={"requestedState": "JOB_STATE_CANCELLED"}).execute()
    assert err.value.status_code == 400
    assert error_of(err)["status"] == "FAILED_PRECONDITION"
    assert "has terminated in state JOB_STATE_CANCELLED" in error_of(err)["message"]


def test_drain_only_for_streaming_jobs(df, project):
    jobs = df.projects().locations().jobs()
    batch = create(df, project, name="batch")
    with pytest.raises(HttpError) as err:
        jobs.update(projectId=project, location=REGION, jobId=batch["id"],
                    body={"requestedState": "JOB_STATE_DRAINED"}).execute()
    assert error_of(err)["status"] == "FAILED_PRECONDITION"
    streaming = create(df, project, name="stream", type="JOB_TYPE_STREAMING")
    drained = jobs.update(projectId=project, location=REGION, jobId=streaming["id"],
                          body={"requestedState": "JOB_STATE_DRAINING"}).execute()
    assert drained["currentState"] in ("JOB_STATE_DRAINING", "JOB_STATE_DRAINED")


def test_update_mask_changes_only_named_fields(df, project):
    job = create(df, project, labels={"a": "1"})
    jobs = df.projects().locations().jobs()
    out = jobs.update(projectId=project, location=REGION, jobId=job["id"], updateMask="labels",
                      body={"labels": {"b": "2"}, "runtimeUpdatableParams": {"maxNumWorkers": 9}}).execute()
    assert out["labels"] == {"b": "2"} and "runtimeUpdatableParams" not in out
    out = jobs.update(projectId=project, location=REGION, jobId=job["id"],
                      updateMask="runtime_updatable_params.max_num_workers",
                      body={"runtimeUpdatableParams": {"maxNumWorkers": 5}}).execute()
    assert out["runtimeUpdatableParams"] == {"maxNumWorkers": 5} and out["labels"] == {"b": "2"}
    with pytest.raises(HttpError) as err:
        jobs.update(projectId=project, location=REGION, jobId=job["id"], updateMask="name",
                    body={"name": "x"}).execute()
    assert err.value.status_code == 400


def test_list_filters_pages_and_views(df, project, check):
    jobs = df.projects().locations().jobs()
    made = [create(df, project, name=f"job-{i}", steps=[{"kind": "ParallelDo", "name": "s1"}]) for i in range(5)]
    jobs.update(projectId=project, location=REGION, jobId=made[0]["id"],
                body={"requestedState": "JOB_STATE_DONE"}).execute()
    everything = jobs.list(projectId=project, location=REGION).execute()
    check(everything, "ListJobsResponse")
    assert [j["id"] for j in everything["jobs"]] == [j["id"] for j in reversed(made)]  # newest first
    assert all("steps" not in j for j in everything["jobs"])  # summary view
    active = jobs.list(projectId=project, location=REGION, filter="ACTIVE").execute()
    assert {j["id"] for j in active["jobs"]} == {j["id"] for j in made[1:]}
    done = jobs.list(projectId=project, location=REGION, filter="TERMINATED").execute()
    assert [j["id"] for j in done["jobs"]] == [made[0]["id"]]
    named = jobs.list(projectId=project, location=REGION, name="job-3").execute()
    assert [j["id"] for j in named["jobs"]] == [made[3]["id"]]
    # Pages of 2 cover everything exactly once.
    seen, token = [], None
    while True:
        page = jobs.list(projectId=project, location=REGION, pageSize=2, pageToken=token).execute()
        seen += [j["id"] for j in page.get("jobs", [])]
        token = page.get("nextPageToken")
        if not token:
            break
    assert seen == [j["id"] for j in reversed(made)]
    # A token is bound to its parameters.
    first = jobs.list(projectId=project, location=REGION, pageSize=2).execute()
    with pytest.raises(HttpError) as err:
        jobs.list(projectId=project, location=REGION, pageSize=2, filter="ACTIVE",
                  pageToken=first["nextPageToken"]).execute()
    assert err.value.status_code == 400
    # No jobs: the `jobs` field is omitted.
    assert "jobs" not in jobs.list(projectId=project, location="asia-east1").execute()


def test_views(df, project):
    job = create(df, project, steps=[{"kind": "ParallelDo", "name": "s1", "properties": {"a": 1}}],
                 environment={"tempStoragePrefix": "/tmp"})
    get = df.projects().locations().jobs().get
    summary = get(projectId=project, location=REGION, jobId=job["id"]).execute()
    assert "steps" not in summary and "environment" not in summary
    for view in ("JOB_VIEW_ALL", "JOB_VIEW_DESCRIPTION"):
        full = get(projectId=project, location=REGION, jobId=job["id"], view=view).execute()
        assert full["steps"][0]["name"] == "s1"
    assert "steps" not in get(projectId=project, location=REGION, jobId=job["id"], view="JOB_VIEW_SUMMARY").execute()


def test_aggregated_spans_locations(df, project):
    a = create(df, project, name="a", location="us-central1")
    b = create(df, project, name="b", location="europe-west1")
    out = df.projects().jobs().aggregated(projectId=project).execute()
    assert {j["id"] for j in out["jobs"]} == {a["id"], b["id"]}


def test_project_level_aliases_default_to_us_central1(df, project):
    job = df.projects().jobs().create(projectId=project, body={"name": "alias"}).execute()
    assert job["location"] == "us-central1"
    got = df.projects().jobs().get(projectId=project, jobId=job["id"]).execute()
    assert got["id"] == job["id"]


def test_unknown_job_is_404(df, project):
    with pytest.raises(HttpError) as err:
        df.projects().locations().jobs().get(projectId=project, location=REGION, jobId="nope").execute()
    assert err.value.status_code == 404
    assert error_of(err)["status"] == "NOT_FOUND"


# ---- GAPIC REST: enums as integers, `$alt=json;enum-encoding=int` --------------------------

def test_gapic_create_get_list_update(gapic, project):
    from google.cloud import dataflow_v1beta3 as dataflow

    jobs = gapic["jobs"]
    created = jobs.create_job(request=dataflow.CreateJobRequest(
        project_id=project, location=REGION,
        job=dataflow.Job(name="gapic", type_=dataflow.JobType.JOB_TYPE_BATCH, client_request_id="r1")))
    assert created.id and created.current_state == dataflow.JobState.JOB_STATE_PENDING
    got = jobs.get_job(request=dataflow.GetJobRequest(project_id=project, location=REGION, job_id=created.id))
    assert got.name == "gapic"
    listed = jobs.list_jobs(request=dataflow.ListJobsRequest(
        project_id=project, location=REGION, filter=dataflow.ListJobsRequest.Filter.ACTIVE))
    assert [j.id for j in listed] == [created.id]
    jobs.update_job(request=dataflow.UpdateJobRequest(
        project_id=project, location=REGION, job_id=created.id,
        job=dataflow.Job(requested_state=dataflow.JobState.JOB_STATE_CANCELLED)))
    got = jobs.get_job(request=dataflow.GetJobRequest(project_id=project, location=REGION, job_id=created.id))
    assert got.requested_state == dataflow.JobState.JOB_STATE_CANCELLED
    with pytest.raises(exceptions.Conflict):  # api_core maps 409 ALREADY_EXISTS to Conflict
        jobs.create_job(request=dataflow.CreateJobRequest(
            project_id=project, location=REGION, job=dataflow.Job(name="gapic2", client_request_id="x")))
        jobs.create_job(request=dataflow.CreateJobRequest(
            project_id=project, location=REGION, job=dataflow.Job(name="gapic2", client_request_id="y")))
    with pytest.raises(exceptions.NotFound):
        jobs.get_job(request=dataflow.GetJobRequest(project_id=project, location=REGION, job_id="missing"))
