"""`headrace serve --auth-tokens FILE`: bearer tokens granted per project.

No token or an unknown one is 401 UNAUTHENTICATED; a token on another project's resources
is 403 PERMISSION_DENIED. Real clients carry the token: googleapiclient and GAPIC with
`google.oauth2.credentials.Credentials(token)`. Without the file (the default, on loopback)
nobody is asked for one.
"""

from __future__ import annotations

import json

import httpx
import pytest
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import dataflow_v1beta3 as dataflow
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from tests.conftest import start_server

REGION = "us-central1"
TOKENS = {"tok-a": ["proj-a"], "tok-ab": ["proj-a", "proj-b"], "tok-all": "*"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    data = tmp_path_factory.mktemp("auth")
    tokens = data / "tokens.json"
    tokens.write_text(json.dumps(TOKENS))
    server = start_server(data, "--auth-tokens", str(tokens))
    yield server
    server.stop()


def discovery(server, credentials):
    return build("dataflow", "v1b3", credentials=credentials, client_options={"api_endpoint": server.url},
                 cache_discovery=False)


def gapic_jobs(server, credentials):
    return dataflow.JobsV1Beta3Client(credentials=credentials, transport="rest",
                                      client_options=ClientOptions(api_endpoint=server.url))


def envelope(response: httpx.Response, code: int, status: str) -> dict:
    assert response.status_code == code, response.text
    err = response.json()["error"]
    assert err["code"] == code and err["status"] == status and err["message"]
    return err


def jobs_url(project: str) -> str:
    return f"/v1b3/projects/{project}/locations/{REGION}/jobs"


def test_googleapiclient_with_a_token_works_on_its_projects(guarded):
    df = discovery(guarded, Credentials("tok-a")).projects().locations().jobs()
    job = df.create(projectId="proj-a", location=REGION, body={"name": "authed"}).execute()
    assert df.get(projectId="proj-a", location=REGION, jobId=job["id"]).execute()["id"] == job["id"]
    with pytest.raises(HttpError) as excinfo:
        df.list(projectId="proj-b", location=REGION).execute()
    assert excinfo.value.status_code == 403
    err = json.loads(excinfo.value.content)["error"]
    assert err["status"] == "PERMISSION_DENIED" and "proj-b" in err["message"]
    # A token granted several projects, and one granted all.
    for token in ("tok-ab", "tok-all"):
        listed = discovery(guarded, Credentials(token)).projects().locations().jobs().list(
            projectId="proj-a", location=REGION).execute()
        assert job["id"] in {j["id"] for j in listed["jobs"]}


def test_gapic_with_a_token_works_on_its_projects(guarded):
    jobs = gapic_jobs(guarded, Credentials("tok-ab"))
    created = jobs.create_job(request={"project_id": "proj-b", "location": REGION,
                                       "job": dataflow.Job(name="gapic-authed")})
    assert [j.id for j in jobs.list_jobs(request={"project_id": "proj-b", "location": REGION})] == [created.id]
    with pytest.raises(exceptions.Forbidden) as excinfo:  # 403; gRPC would say PermissionDenied
        gapic_jobs(guarded, Credentials("tok-a")).get_job(
            request={"project_id": "proj-b", "location": REGION, "job_id": created.id})
    assert excinfo.value.reason == "IAM_PERMISSION_DENIED"


@pytest.mark.parametrize("credentials", [Credentials("not-a-token"), AnonymousCredentials()],
                         ids=["unknown token", "no token"])
def test_clients_without_a_valid_token_are_turned_away(guarded, credentials):
    # On a 401 the clients try to refresh their credentials, which these cannot: the same
    # failure a user sees against Google with an expired token.
    refused = (auth_exceptions.RefreshError, auth_exceptions.InvalidOperation)
    with pytest.raises(refused):
        discovery(guarded, credentials).projects().locations().jobs().list(
            projectId="proj-a", location=REGION).execute()
    with pytest.raises(refused):
        list(gapic_jobs(guarded, credentials).list_jobs(request={"project_id": "proj-a", "location": REGION}))


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dG9rLWE="},
                                     {"Authorization": "tok-a"}, {"Authorization": "Bearer  tok-x"}])
def test_401_envelope(guarded, headers):
    response = httpx.get(guarded.url + jobs_url("proj-a"), headers=headers)
    err = envelope(response, 401, "UNAUTHENTICATED")
    assert "Bearer" in err["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert err["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"


def test_access_token_query_parameter_is_a_token_too(guarded):
    assert httpx.get(guarded.url + jobs_url("proj-a"), params={"access_token": "tok-a"}).status_code == 200
    envelope(httpx.get(guarded.url + jobs_url("proj-b"), params={"access_token": "tok-a"}), 403, "PERMISSION_DENIED")
    envelope(httpx.get(guarded.url + jobs_url("proj-a"), params={"access_token": "nope"}), 401, "UNAUTHENTICATED")


def test_auth_is_checked_before_the_request_is_looked_at(guarded):
    # An anonymous caller learns nothing from validation errors or from 501s.
    bad = httpx.post(guarded.url + jobs_url("proj-a"), content=b"{not json")
    envelope(bad, 401, "UNAUTHENTICATED")
    other = httpx.post(guarded.url + jobs_url("proj-b"), content=b"{not json",
                       headers={"Authorization": "Bearer tok-a"})
    envelope(other, 403, "PERMISSION_DENIED")
    unimplemented = f"/v1b3/projects/proj-b/locations/{REGION}/configStoreSettings"
    envelope(httpx.post(guarded.url + unimplemented, json={}, headers={"Authorization": "Bearer tok-a"}),
             403, "PERMISSION_DENIED")
    envelope(httpx.post(guarded.url + unimplemented, json={}, headers={"Authorization": "Bearer tok-ab"}),
             501, "UNIMPLEMENTED")


def test_folder_and_wildcard_resources_need_a_token_for_every_project(guarded):
    folder = "/v1b3/folders/f1/locations/global/configStoreSettings"
    envelope(httpx.get(guarded.url + folder, headers={"Authorization": "Bearer tok-ab"}), 403, "PERMISSION_DENIED")
    envelope(httpx.get(guarded.url + folder, headers={"Authorization": "Bearer tok-all"}), 501, "UNIMPLEMENTED")
    # `projects/-` (AIP-159, how workers lease from every project) is no project of tok-ab's.
    lease = "/v1b3/projects/-/locations/-/jobs/-/workItems:lease"
    body = {"workerId": "w", "workItemTypes": ["map_task"], "requestedLeaseDuration": "1s"}
    envelope(httpx.post(guarded.url + lease, json=body, headers={"Authorization": "Bearer tok-ab"}),
             403, "PERMISSION_DENIED")
    granted = httpx.post(guarded.url + lease, json=body, headers={"Authorization": "Bearer tok-all"})
    assert granted.status_code not in (401, 403), granted.text


def test_health_and_openapi_stay_open(guarded):
    assert httpx.get(guarded.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(guarded.url + "/openapi.json").json()["openapi"].startswith("3.")


def test_without_a_token_file_nobody_is_asked(df, project):
    # The session's server runs without --auth-tokens: anonymous credentials just work.
    job = df.projects().locations().jobs().create(projectId=project, location=REGION, body={"name": "open"}).execute()
    assert job["projectId"] == project


@pytest.mark.parametrize("content", ['{"tok": 5}'])
def test_a_bad_token_file_stops_the_server_with_a_clear_message(tmp_path, content):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(content)
    with pytest.raises(RuntimeError) as excinfo:
        start_server(tmp_path / "data", "--auth-tokens", str(tokens)).stop()
    assert "--auth-tokens" in str(excinfo.value)
