"""jobs.getExecutionDetails and jobs.stages.getExecutionDetails, through googleapiclient and GAPIC."""

from __future__ import annotations

import json

import pytest
from googleapiclient.errors import HttpError

REGION = "us-central1"


def create_job(df, project, name="ed"):
    return df.projects().locations().jobs().create(projectId=project, location=REGION, body={"name": name}).execute()


def lease(df, project, job_id, worker):
    out = df.projects().locations().jobs().workItems().lease(
        projectId=project, location=REGION, jobId=job_id, body={"workerId": worker}).execute()
    [item] = out["workItems"]
    return item


def report(df, item, worker, **status):
    return df.projects().locations().jobs().workItems().reportStatus(
        projectId=item["projectId"], location=REGION, jobId=item["jobId"],
        body={"workerId": worker, "workItemStatuses": [{"workItemId": item["id"], **status}]},
    ).execute()["workItemServiceStates"][0]


def job_details(df, project, job_id, **params):
    return df.projects().locations().jobs().getExecutionDetails(
        projectId=project, location=REGION, jobId=job_id, **params).execute()


def stage_details(df, project, job_id, stage="S01", **params):
    return df.projects().locations().jobs().stages().getExecutionDetails(
        projectId=project, location=REGION, jobId=job_id, stageId=stage, **params).execute()


def error_of(excinfo):
    return json.loads(excinfo.value.content)["error"]


def attempts(details):
    return [(w["workerName"], a["attemptId"], a["state"]) for w in details.get("workers", []) for a in w["workItems"]]


@pytest.fixture
def ran(df, project):
    """A job whose item failed on one worker, was retried on a second and succeeded there."""
    job = create_job(df, project)
    first = lease(df, project, job["id"], "worker-a")
    report(df, first, "worker-a", reportIndex=first["initialReportIndex"], completed=True,
           errors=[{"code": 2, "message": "boom"}])
    second = lease(df, project, job["id"], "worker-b")
    report(df, second, "worker-b", reportIndex=second["initialReportIndex"], completed=True)
    return job


def test_stage_summary_follows_the_work(df, project, check):
    job = create_job(df, project)
    fresh = job_details(df, project, job["id"])
    check(fresh, "JobExecutionDetails")
    [stage] = fresh["stages"]
    assert stage["stageId"] == "S01" and stage["state"] == "EXECUTION_STATE_NOT_STARTED"
    assert "startTime" not in stage and "endTime" not in stage
    item = lease(df, project, job["id"], "worker-a")
    answer = report(df, item, "worker-a", reportIndex=item["initialReportIndex"],
                    reportedProgress={"fractionConsumed": 0.5})
    [stage] = job_details(df, project, job["id"])["stages"]
    assert stage["state"] == "EXECUTION_STATE_RUNNING" and stage["startTime"] >= job["createTime"]
    assert stage["progress"]["currentProgress"] == 0.5 and "endTime" not in stage
    running = stage_details(df, project, job["id"])
    check(running, "StageExecutionDetails")
    [(worker, [attempt])] = [(w["workerName"], w["workItems"]) for w in running["workers"]]
    assert worker == "worker-a" and attempt["state"] == "EXECUTION_STATE_RUNNING"
    assert attempt["taskId"] == item["id"] and attempt["progress"]["currentProgress"] == 0.5
    # A failed attempt waiting for its retry leaves the stage running.
    report(df, item, "worker-a", reportIndex=answer["nextReportIndex"], completed=True, errors=[{"message": "x"}])
    assert job_details(df, project, job["id"])["stages"][0]["state"] == "EXECUTION_STATE_RUNNING"
    retry = lease(df, project, job["id"], "worker-b")
    report(df, retry, "worker-b", reportIndex=retry["initialReportIndex"], completed=True)
    done = job_details(df, project, job["id"])
    check(done, "JobExecutionDetails")
    [stage] = done["stages"]
    assert stage["state"] == "EXECUTION_STATE_SUCCEEDED" and stage["endTime"] >= stage["startTime"]
    assert stage["progress"]["currentProgress"] == 1.0


def test_stage_details_name_every_worker_and_attempt(df, project, check, ran):
    details = stage_details(df, project, ran["id"])
    check(details, "StageExecutionDetails")
    assert attempts(details) == [("worker-a", "1", "EXECUTION_STATE_FAILED"),
                                 ("worker-b", "2", "EXECUTION_STATE_SUCCEEDED")]
    for worker in details["workers"]:
        for attempt in worker["workItems"]:
            assert attempt["endTime"] >= attempt["startTime"]
    # Pages of one attempt cover the same attempts, once each.
    seen, token = [], None
    while True:
        page = stage_details(df, project, ran["id"], pageSize=1, pageToken=token)
        check(page, "StageExecutionDetails")
        assert len(attempts(page)) == 1
        seen += attempts(page)
        token = page.get("nextPageToken")
        if not token:
            break
    assert seen == attempts(details)
    # The time window selects attempts by start time.
    second_start = details["workers"][1]["workItems"][0]["startTime"]
    assert attempts(stage_details(df, project, ran["id"], startTime=second_start)) == attempts(details)[1:]
    assert attempts(stage_details(df, project, ran["id"], endTime=second_start)) == attempts(details)[:1]
    # A token belongs to its request's parameters.
    first = stage_details(df, project, ran["id"], pageSize=1)
    with pytest.raises(HttpError) as err:
        stage_details(df, project, ran["id"], pageSize=1, startTime=second_start, pageToken=first["nextPageToken"])
    assert err.value.status_code == 400


def test_cancelled_stage(df, project):
    job = create_job(df, project)
    item = lease(df, project, job["id"], "worker-a")
    df.projects().locations().jobs().update(projectId=project, location=REGION, jobId=job["id"],
                                            body={"requestedState": "JOB_STATE_CANCELLED"}).execute()
    report(df, item, "worker-a", reportIndex=item["initialReportIndex"], completed=True)
    [stage] = job_details(df, project, job["id"])["stages"]
    assert stage["state"] == "EXECUTION_STATE_CANCELLED" and stage["endTime"]
    assert attempts(stage_details(df, project, job["id"])) == [("worker-a", "1", "EXECUTION_STATE_CANCELLED")]


def test_unknown_job_and_stage_are_404(df, project):
    with pytest.raises(HttpError) as err:
        job_details(df, project, "2026-01-01_00_00_00-1")
    assert err.value.status_code == 404 and error_of(err)["status"] == "NOT_FOUND"
    job = create_job(df, project)
    with pytest.raises(HttpError) as err:
        stage_details(df, project, job["id"], stage="S99")
    assert err.value.status_code == 404
    assert "Stage S99 was not found" in error_of(err)["message"] and "S01" in error_of(err)["message"]
    with pytest.raises(HttpError) as err:
        stage_details(df, project, "2026-01-01_00_00_00-1")
    assert err.value.status_code == 404


def test_gapic_metrics_client_reads_execution_details(gapic, project, df, ran):
    from google.cloud import dataflow_v1beta3 as dataflow

    client = gapic["metrics"]
    stages = list(client.get_job_execution_details(request=dataflow.GetJobExecutionDetailsRequest(
        project_id=project, location=REGION, job_id=ran["id"])))
    assert [(s.stage_id, s.state) for s in stages] == [("S01", dataflow.ExecutionState.EXECUTION_STATE_SUCCEEDED)]
    workers = list(client.get_stage_execution_details(request=dataflow.GetStageExecutionDetailsRequest(
        project_id=project, location=REGION, job_id=ran["id"], stage_id="S01", page_size=1)))
    assert [(w.worker_name, [i.state for i in w.work_items]) for w in workers] == [
        ("worker-a", [dataflow.ExecutionState.EXECUTION_STATE_FAILED]),
        ("worker-b", [dataflow.ExecutionState.EXECUTION_STATE_SUCCEEDED])]
