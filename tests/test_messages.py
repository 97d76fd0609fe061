"""jobs.messages.list: importance by rank, [startTime, endTime) windows, ascending, pages."""

from __future__ import annotations

import pytest
from googleapiclient.errors import HttpError

from headrace import wire

REGION = "us-central1"


def make_job(df, project, name="msgs"):
    return df.projects().locations().jobs().create(projectId=project, location=REGION, body={"name": name}).execute()


def send(df, project, job_id, *codes):
    """Worker message codes become job messages (HARNESS_STARTED: DETAILED, GCS_DOWNLOAD_ERROR: ERROR)."""
    messages = [{"labels": {"JOB_ID": job_id, "WORKER_ID": "w-1"}, "time": wire.format_time(wire.now()),
                 "workerMessageCode": {"code": code, "parameters": {"object": "gs://b/o"}}} for code in codes]
    df.projects().locations().workerMessages(projectId=project, location=REGION,
                                             body={"workerMessages": messages}).execute()


def list_messages(df, project, job_id, **kw):
    return df.projects().locations().jobs().messages().list(
        projectId=project, location=REGION, jobId=job_id, **kw).execute()


def all_pages(df, project, job_id, **kw):
    out, token = [], None
    while True:
        page = list_messages(df, project, job_id, pageToken=token, **kw)
        out += page.get("jobMessages", [])
        token = page.get("nextPageToken")
        if not token:
            return out


def test_lists_in_ascending_time_with_schema(df, project, check):
    job = make_job(df, project)
    send(df, project, job["id"], "HARNESS_STARTED", "GCS_DOWNLOAD_ERROR")
    page = list_messages(df, project, job["id"])
    check(page, "ListJobMessagesResponse")
    times = [m["time"] for m in page["jobMessages"]]
    assert times == sorted(times) and len(times) >= 3
    assert page["jobMessages"][0]["messageImportance"] == "JOB_MESSAGE_BASIC"  # "Job ... created."
    assert len({m["id"] for m in page["jobMessages"]}) == len(times)


def test_minimum_importance_is_a_rank_not_an_enum_number(df, project, http):
    job = make_job(df, project)
    send(df, project, job["id"], "HARNESS_STARTED", "GCS_DOWNLOAD_ERROR")
    importances = lambda msgs: {m["messageImportance"] for m in msgs}  # noqa: E731
    everything = importances(list_messages(df, project, job["id"])["jobMessages"])
    assert {"JOB_MESSAGE_DETAILED", "JOB_MESSAGE_BASIC", "JOB_MESSAGE_ERROR"} <= everything
    basic = importances(list_messages(df, project, job["id"], minimumImportance="JOB_MESSAGE_BASIC")["jobMessages"])
    assert basic == {"JOB_MESSAGE_BASIC", "JOB_MESSAGE_ERROR"}
    errors = importances(list_messages(df, project, job["id"], minimumImportance="JOB_MESSAGE_WARNING")["jobMessages"])
    assert errors == {"JOB_MESSAGE_ERROR"}
    # GAPIC sends the enum number: BASIC is 5 on the wire, yet still ranks below WARNING.
    r = http.get(f"/v1b3/projects/{project}/locations/{REGION}/jobs/{job['id']}/messages",
                 params={"minimumImportance": 5, "$alt": "json;enum-encoding=int"})
    assert importances(r.json()["jobMessages"]) == {"JOB_MESSAGE_BASIC", "JOB_MESSAGE_ERROR"}


def test_time_window_is_start_inclusive_end_exclusive(df, project):
    job = make_job(df, project)
    send(df, project, job["id"], "HARNESS_STARTED")
    send(df, project, job["id"], "HARNESS_STARTED")
    msgs = list_messages(df, project, job["id"])["jobMessages"]
    first, last = msgs[0]["time"], msgs[-1]["time"]
    from_first = list_messages(df, project, job["id"], startTime=first)["jobMessages"]
    assert from_first[0]["id"] == msgs[0]["id"]
    before_last = list_messages(df, project, job["id"], endTime=last)["jobMessages"]
    assert msgs[-1]["id"] not in {m["id"] for m in before_last}
    assert {m["id"] for m in before_last} == {m["id"] for m in msgs if m["time"] < last}


def test_pages_cover_every_message_once(df, project):
    job = make_job(df, project)
    send(df, project, job["id"], *["HARNESS_STARTED"] * 7)
    whole = list_messages(df, project, job["id"], pageSize=1000)["jobMessages"]
    paged = all_pages(df, project, job["id"], pageSize=3)
    assert [m["id"] for m in paged] == [m["id"] for m in whole]
    with pytest.raises(HttpError) as err:
        token = list_messages(df, project, job["id"], pageSize=3)["nextPageToken"]
        list_messages(df, project, job["id"], pageSize=3, minimumImportance="JOB_MESSAGE_ERROR", pageToken=token)
    assert err.value.status_code == 400


def test_gapic_list_job_messages(gapic, df, project):
    from google.cloud import dataflow_v1beta3 as dataflow

    job = make_job(df, project)
    send(df, project, job["id"], "GCS_DOWNLOAD_ERROR")
    pager = gapic["messages"].list_job_messages(request=dataflow.ListJobMessagesRequest(
        project_id=project, location=REGION, job_id=job["id"],
        minimum_importance=dataflow.JobMessageImportance.JOB_MESSAGE_BASIC))
    kinds = [m.message_importance for m in pager]
    assert dataflow.JobMessageImportance.JOB_MESSAGE_ERROR in kinds
    assert dataflow.JobMessageImportance.JOB_MESSAGE_DETAILED not in kinds


def test_unknown_job_is_404(df, project):
    with pytest.raises(HttpError) as err:
        list_messages(df, project, "2026-01-01_00_00_00-1")
    assert err.value.status_code == 404
