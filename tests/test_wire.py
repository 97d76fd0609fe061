"""The wire: proto3 JSON both ways, Google's error envelope for every failure, and the
system endpoints (/healthz, /openapi.json). Driven by httpx where the point is the raw
bytes, and by googleapiclient and GAPIC where the point is that real clients work."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from google.api_core import exceptions
from google.cloud.dataflow_v1beta3 import types
from googleapiclient.errors import HttpError

from headrace.api.discovery import load
from tests.conftest import start_server

REGION = "us-central1"


def jobs_url(project: str) -> str:
    return f"/v1b3/projects/{project}/locations/{REGION}/jobs"


def error(response: httpx.Response, code: int, status: str) -> dict:
    """Assert Google's envelope with this code and status; return its `error`."""
    assert response.status_code == code, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert err["code"] == code and err["status"] == status and err["message"], err
    return err


def create(http, project, **fields) -> dict:
    body = {"name": f"wire-{uuid.uuid4().hex[:8]}", **fields}
    response = http.post(jobs_url(project), json=body)
    assert response.status_code == 200, response.text
    return response.json()


def get_all(http, project, job_id) -> dict:
    response = http.get(f"{jobs_url(project)}/{job_id}", params={"view": "JOB_VIEW_ALL"})
    assert response.status_code == 200, response.text
    return response.json()


# ---- system endpoints ---------------------------------------------------------------


def test_healthz(http):
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/nope", "/v1b3/projects/p/nothing", "/v1b3/projects/p/jobs/j/extra/segments", "/v1"])
def test_unknown_path_is_a_404_envelope(http, path):
    err = error(http.get(path), 404, "NOT_FOUND")
    assert path in err["message"]


@pytest.mark.parametrize("verb, path, allowed", [
    ("DELETE", "/v1b3/projects/p/jobs/j", {"GET", "PUT"}),
    ("PATCH", "/v1b3/projects/p/locations/l/jobs", {"GET", "POST"}),
    ("GET", "/v1b3/projects/p/locations/l/jobs/j/workItems:lease", {"POST"}),
    ("OPTIONS", "/v1b3/projects/p/jobs", {"GET", "POST"}),
    ("POST", "/healthz", {"GET", "HEAD"}),
])
def test_wrong_verb_is_a_405_envelope_with_allow(http, verb, path, allowed):
    response = http.request(verb, path)
    error(response, 405, "UNIMPLEMENTED")
    assert set(response.headers["allow"].split(", ")) == allowed


def test_openapi_document_covers_every_method(http):
    response = http.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    operations = {op["operationId"]: (verb.upper(), path) for path, item in doc["paths"].items()
                  for verb, op in item.items()}
    methods = load().methods
    assert set(operations) == {m.id for m in methods}
    for m in methods:
        assert operations[m.id] == (m.http_method, "/" + m.path)
    job = doc["components"]["schemas"]["Job"]["properties"]
    assert job["createTime"]["format"] == "date-time"
    assert job["type"]["enum"][:2] == ["JOB_TYPE_UNKNOWN", "JOB_TYPE_BATCH"]


# ---- request encodings --------------------------------------------------------------


@pytest.mark.parametrize("alt", [{"$alt": "json;enum-encoding=int"}, {"alt": "json"}, {"prettyPrint": "false"},
                                 {"prettyPrint": "true", "alt": "json"}, {"$.xgafv": "2", "quotaUser": "q"}])
def test_system_query_parameters_are_accepted(http, project, alt):
    job = create(http, project)
    response = http.get(f"{jobs_url(project)}/{job['id']}", params=alt)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == job["id"]


def test_a_format_other_than_json_is_refused(http, project):
    err = error(http.get(jobs_url(project), params={"alt": "proto"}), 400, "INVALID_ARGUMENT")
    assert "alt=json" in err["message"]


def test_enum_numbers_in_query_use_proto_numbers(http, project):
    active = create(http, project, name="active")
    done = create(http, project, name="done")
    response = http.put(f"{jobs_url(project)}/{done['id']}", json={"requestedState": "JOB_STATE_DONE"})
    assert response.status_code == 200, response.text

    def listed(filter_):
        response = http.get(jobs_url(project), params={"filter": filter_, "$alt": "json;enum-encoding=int"})
        assert response.status_code == 200, response.text
        return {j["id"] for j in response.json().get("jobs", [])}

    assert listed(3) == listed("ACTIVE") == {active["id"]}  # 3 is ACTIVE in the proto
    assert listed(2) == listed("TERMINATED") == {done["id"]}
    error(http.get(jobs_url(project), params={"filter": 9}), 400, "INVALID_ARGUMENT")


def test_minimum_importance_5_means_basic(http, project):
    """JOB_MESSAGE_BASIC is 5 on the wire (after WARNING=3 and ERROR=4), not its place in
    the discovery document's list, where 5 is ERROR."""
    job = create(http, project)
    url = f"{jobs_url(project)}/{job['id']}/messages"

    def texts(importance):
        response = http.get(url, params={"minimumImportance": importance})
        assert response.status_code == 200, response.text
        return [m["messageImportance"] for m in response.json().get("jobMessages", [])]

    basic = texts(5)
    assert basic and set(basic) == {"JOB_MESSAGE_BASIC"}
    assert texts("JOB_MESSAGE_BASIC") == basic
    assert texts(4) == texts("JOB_MESSAGE_ERROR") == []


def test_gapic_sends_enums_as_numbers_and_reads_names_back(gapic, project):
    jobs = gapic["jobs"]
    created = jobs.create_job(request={"project_id": project, "location": REGION, "job": types.Job(
        name="from-gapic", type_=types.JobType.JOB_TYPE_STREAMING, labels={"k": "v"})})
    assert created.type_ == types.JobType.JOB_TYPE_STREAMING
    got = jobs.get_job(request={"project_id": project, "location": REGION, "job_id": created.id,
                                "view": types.JobView.JOB_VIEW_ALL})
    assert got.labels["k"] == "v" and got.current_state == types.JobState.JOB_STATE_PENDING
    active = jobs.list_jobs(request={"project_id": project, "location": REGION,
                                     "filter": types.ListJobsRequest.Filter.ACTIVE})
    assert [j.id for j in active] == [created.id]
    terminated = jobs.list_jobs(request={"project_id": project, "location": REGION,
                                         "filter": types.ListJobsRequest.Filter.TERMINATED})
    assert list(terminated) == []
    messages = gapic["messages"].list_job_messages(request={
        "project_id": project, "location": REGION, "job_id": created.id,
        "minimum_importance": types.JobMessageImportance.JOB_MESSAGE_BASIC})
    assert {m.message_importance for m in messages} == {types.JobMessageImportance.JOB_MESSAGE_BASIC}


def test_enum_numbers_in_bodies(http, project, check):
    job = create(http, project, type=2)  # JOB_TYPE_STREAMING
    check(job, "Job")
    assert job["type"] == "JOB_TYPE_STREAMING"
    err = error(http.post(jobs_url(project), json={"name": "x", "type": 7}), 400, "INVALID_ARGUMENT")
    assert "'type'" in err["message"] and "JOB_TYPE_BATCH" in err["message"]


def test_int64_as_string_or_number_answers_strings(http, project, check):
    display = [{"key": "a", "int64Value": 12}, {"key": "b", "int64Value": "-9223372036854775808"},
               {"key": "c", "int64Value": 4.0}]
    job = create(http, project, pipelineDescription={"displayData": display})
    got = get_all(http, project, job["id"])
    check(got, "Job")
    values = [d["int64Value"] for d in got["pipelineDescription"]["displayData"]]
    assert values == ["12", "-9223372036854775808", "4"]


@pytest.mark.parametrize("value", [9223372036854775808, "9223372036854775808", -9223372036854775809,
                                   1.5, "12abc", "", True, [1], 1e300])
def test_int64_out_of_range_or_malformed_is_refused(http, project, value):
    body = {"name": "x", "pipelineDescription": {"displayData": [{"key": "a", "int64Value": value}]}}
    err = error(http.post(jobs_url(project), json=body), 400, "INVALID_ARGUMENT")
    assert "pipelineDescription.displayData[0].int64Value" in err["message"]
    violation = err["details"][0]
    assert violation["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert violation["fieldViolations"][0]["field"] == "pipelineDescription.displayData[0].int64Value"


@pytest.mark.parametrize("value", [2**31, -2**31 - 1, "1e3", 1.25])
def test_int32_out_of_range_or_malformed_is_refused(http, project, value):
    body = {"name": "x", "environment": {"workerPools": [{"numWorkers": value}]}}
    err = error(http.post(jobs_url(project), json=body), 400, "INVALID_ARGUMENT")
    assert "numWorkers" in err["message"]


def test_timestamps_are_normalised_to_utc_microseconds(http, project):
    display = [{"key": "a", "timestampValue": "2026-01-02T03:04:05+02:00"},
               {"key": "b", "timestampValue": "2026-01-02T03:04:05.123456789Z"},
               {"key": "c", "timestampValue": "0001-01-01T00:00:00Z"}]
    job = create(http, project, pipelineDescription={"displayData": display})
    got = get_all(http, project, job["id"])
    assert [d["timestampValue"] for d in got["pipelineDescription"]["displayData"]] == [
        "2026-01-02T01:04:05.000000Z", "2026-01-02T03:04:05.123456Z", "0001-01-01T00:00:00.000000Z"]


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00Z", "2026-01-02", "2026-01-02T03:04:05",
                                   "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", 1767225600])
def test_bad_timestamps_are_refused_with_a_clear_message(http, project, value):
    body = {"name": "x", "pipelineDescription": {"displayData": [{"key": "a", "timestampValue": value}]}}
    err = error(http.post(jobs_url(project), json=body), 400, "INVALID_ARGUMENT")
    assert "timestamp" in err["message"] and "RFC 3339" in err["message"]


def test_bad_timestamp_in_the_query_is_refused(http, project):
    job = create(http, project)
    err = error(http.get(f"{jobs_url(project)}/{job['id']}/messages", params={"startTime": "noon"}),
                400, "INVALID_ARGUMENT")
    assert "startTime" in err["message"] and "RFC 3339" in err["message"]


@pytest.mark.parametrize("value, ok", [("3.5s", True), ("-2s", True), ("0.000000001s", True), ("3.5", False),
                                       ("3.5 s", False), ("1e3s", False), ("999999999999999s", False)])
def test_durations(http, project, value, ok):
    body = {"name": "x", "pipelineDescription": {"displayData": [{"key": "a", "durationValue": value}]}}
    response = http.post(jobs_url(project), json=body)
    if ok:
        assert response.status_code == 200, response.text
        assert get_all(http, project, response.json()["id"])["pipelineDescription"]["displayData"][0][
            "durationValue"] == value
    else:
        assert "duration" in error(response, 400, "INVALID_ARGUMENT")["message"]


def test_snake_case_keys_and_nulls(http, project, check):
    job = create(http, project, client_request_id="req-7", type=None, labels=None,
                 environment={"temp_storage_prefix": "gs://b/t", "worker_pools": [{"num_workers": 3}]})
    check(job, "Job")
    assert job["clientRequestId"] == "req-7" and job["type"] == "JOB_TYPE_BATCH"
    got = get_all(http, project, job["id"])
    assert got["environment"] == {"tempStoragePrefix": "gs://b/t", "workerPools": [{"numWorkers": 3}]}


# ---- refusals --------------------------------------------------------------------------


def test_unknown_fields_are_named(df, project):
    jobs = df.projects().locations().jobs()
    with pytest.raises(HttpError) as top:
        jobs.create(projectId=project, location=REGION, body={"name": "x", "colour": "red"}).execute()
    with pytest.raises(HttpError) as nested:
        jobs.create(projectId=project, location=REGION,
                    body={"name": "x", "environment": {"tempLocation": "gs://b"}}).execute()
    for excinfo, field in ((top, "colour"), (nested, "environment.tempLocation")):
        assert excinfo.value.status_code == 400
        err = json.loads(excinfo.value.content)["error"]
        assert err["status"] == "INVALID_ARGUMENT" and f'Unknown name "{field.split(".")[-1]}"' in err["message"]
        assert err["details"][0]["fieldViolations"][0]["field"] == field


def test_unknown_and_repeated_query_parameters(http, project):
    err = error(http.get(jobs_url(project), params={"colour": "red"}), 400, "INVALID_ARGUMENT")
    assert '"colour"' in err["message"]
    err = error(http.get(jobs_url(project), params=[("pageSize", "1"), ("pageSize", "2")]), 400, "INVALID_ARGUMENT")
    assert "pageSize" in err["message"] and "more than once" in err["message"]


@pytest.mark.parametrize("body, needle", [
    (b'{"name": ', "Invalid JSON payload"),
    (b"\xff\xfe{}", "Invalid JSON payload"),
    (b'{"name": "a", "name2": NaN}', "Invalid JSON payload"),
    (b"[1, 2]", "Expected an object"),
    (b'"job"', "Expected an object"),
    (b'{"name": 5}', "'name' (string)"),
    (b'{"name": "x", "labels": ["a"]}', "'labels' (object)"),
    (b'{"name": "x", "steps": {}}', "'steps' (list)"),
    (b'{"name": "x", "environment": {"workerPools": [{"numWorkers": true}]}}', "numWorkers"),
    (b'{"name": "x", "labels": {"k": 1}}', "labels"),
    (b'{"name": "x\\u0000y"}', "NUL"),
])
def test_malformed_or_mistyped_bodies(http, project, body, needle):
    response = http.post(jobs_url(project), content=body, headers={"content-type": "application/json"})
    assert needle in error(response, 400, "INVALID_ARGUMENT")["message"]


@pytest.mark.parametrize("depth, needle", [(90, None), (150, "Nesting deeper than 100 levels"),
                                           (5000, "Invalid JSON payload")])
def test_deep_nesting_is_refused_cleanly(http, project, depth, needle):
    # sdkPipelineOptions is free-form: only the codec's depth limit bounds it.
    nested = "{\"a\":" * depth + "1" + "}" * depth
    body = '{"name": "deep", "environment": {"sdkPipelineOptions": ' + nested + "}}"
    response = http.post(jobs_url(project), content=body.encode(), headers={"content-type": "application/json"})
    if needle is None:
        assert response.status_code == 200, response.text
    else:
        assert needle in error(response, 400, "INVALID_ARGUMENT")["message"]


def test_unknown_ids_are_404(df, http, project):
    err = error(http.get(f"{jobs_url(project)}/2026-01-01_00_00_00-1"), 404, "NOT_FOUND")
    assert "2026-01-01_00_00_00-1" in err["message"]
    with pytest.raises(HttpError) as excinfo:
        df.projects().locations().jobs().messages().list(projectId=project, location=REGION, jobId="nope").execute()
    assert excinfo.value.status_code == 404


def test_path_parameters_are_decoded_once(http, project):
    assert "Job a/b " in error(http.get(f"{jobs_url(project)}/a%2Fb"), 404, "NOT_FOUND")["message"]
    assert "Job a%41 " in error(http.get(f"{jobs_url(project)}/a%2541"), 404, "NOT_FOUND")["message"]
    assert "NUL" in error(http.get(f"{jobs_url(project)}/a%00"), 400, "INVALID_ARGUMENT")["message"]


def test_gapic_surfaces_the_envelope(gapic, project):
    with pytest.raises(exceptions.NotFound) as excinfo:
        gapic["jobs"].get_job(request={"project_id": project, "location": REGION, "job_id": "missing"})
    assert "missing" in excinfo.value.message


def test_unimplemented_methods_answer_501(http, project):
    response = http.post(f"/v1b3/projects/{project}/locations/{REGION}/configStoreSettings", json={})
    assert "configStoreSettings" in error(response, 501, "UNIMPLEMENTED")["message"]


def test_bodies_over_the_limit_are_413(tmp_path, project):
    server = start_server(tmp_path / "small", env={"HEADRACE_MAX_BODY_BYTES": "2048"})
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            small = {"name": "fits", "labels": {"k": "v" * 100}}
            assert client.post(jobs_url(project), json=small).status_code == 200
            big = json.dumps({"name": "big", "labels": {"k": "v" * 4096}}).encode()
            err = error(client.post(jobs_url(project), content=big), 413, "RESOURCE_EXHAUSTED")
            assert "2048" in err["message"]
            # Without a Content-Length (chunked), the limit holds while reading.
            chunks = (big[i:i + 512] for i in range(0, len(big), 512))
            error(client.post(jobs_url(project), content=chunks), 413, "RESOURCE_EXHAUSTED")
            listed = client.get(jobs_url(project)).json()["jobs"]
            assert [j["name"] for j in listed] == ["fits"]
    finally:
        server.stop()
