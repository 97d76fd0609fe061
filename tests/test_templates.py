"""Classic templates made by Beam's `--template_location`, launched through googleapiclient.

The template is real: a pipeline with ValueProvider options is run with DataflowRunner and
--template_location, and the file Beam writes is put where gs:// paths resolve.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
from googleapiclient.errors import HttpError

REGION = "us-central1"

PIPELINE = textwrap.dedent('''
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    class Options(PipelineOptions):
        @classmethod
        def _add_argparse_args(cls, parser):
            parser.add_value_provider_argument("--greeting", default="hello")
            parser.add_value_provider_argument("--output", type=str)

    options = PipelineOptions()
    custom = options.view_as(Options)
    with beam.Pipeline(options=options) as p:
        (p | beam.Create(["a", "b"])
           | beam.Map(lambda x, g: f"{g.get()} {x}", custom.greeting)
           | beam.io.WriteToText(custom.output))
''')

METADATA = {
    "name": "Greeter",
    "description": "Greets each element.",
    "parameters": [
        {"name": "greeting", "label": "Greeting", "helpText": "Word to greet with", "isOptional": True,
         "regexes": ["[a-z]+"]},
        {"name": "output", "label": "Output prefix", "helpText": "Where to write", "regexes": ["^/.*"]},
    ],
}


@pytest.fixture(scope="module")
def template(server, tmp_path_factory):
    """gs:// path of a real classic template (with metadata) in the server's storage."""
    work = tmp_path_factory.mktemp("template")
    (work / "pipeline.py").write_text(PIPELINE)
    (work / "staging").mkdir()
    local = work / "greeter.json"
    subprocess.run([sys.executable, str(work / "pipeline.py"), "--runner", "DataflowRunner",
                    "--project", "demo", "--region", REGION, "--temp_location", str(work / "staging"),
                    "--template_location", str(local), "--no_auth",
                    "--dataflow_endpoint", server.url], check=True, capture_output=True, timeout=120)
    target = server.data_dir / "gcs" / "bucket" / "templates"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(local, target / "greeter")
    (target / "greeter_metadata").write_text(json.dumps(METADATA))
    shutil.copy(local, target / "bare")  # a template without metadata
    return "gs://bucket/templates/greeter"


def templates(df):
    return df.projects().locations().templates()


def error_of(err):
    return json.loads(err.value.content)["error"]


def test_get_classic_template(df, project, template, check):
    out = templates(df).get(projectId=project, location=REGION, gcsPath=template).execute()
    check(out, "GetTemplateResponse")
    assert out["templateType"] == "LEGACY"
    assert out["metadata"]["name"] == "Greeter"
    assert [p["name"] for p in out["metadata"]["parameters"]] == ["greeting", "output"]


def test_get_missing_template_is_404_naming_the_path(df, project, template):
    with pytest.raises(HttpError) as err:
        templates(df).get(projectId=project, location=REGION, gcsPath="gs://bucket/nope").execute()
    assert err.value.status_code == 404
    assert "gs://bucket/nope" in error_of(err)["message"]


def test_launch_creates_a_job_with_parameters_in_its_options(df, project, template, check):
    # Airflow's DataflowTemplatedJobStartOperator: gcsPath as a query parameter, this body.
    out = templates(df).launch(projectId=project, location=REGION, gcsPath=template, body={
        "jobName": "greet", "parameters": {"greeting": "hi", "output": "/tmp/out"},
        "environment": {"tempLocation": "/tmp/t", "additionalUserLabels": {"team": "a"}, "maxWorkers": 3,
                        "additionalExperiments": ["x1"]}}).execute()
    check(out, "LaunchTemplateResponse")
    job_id = out["job"]["id"]
    job = df.projects().locations().jobs().get(projectId=project, location=REGION, jobId=job_id,
                                               view="JOB_VIEW_ALL").execute()
    options = job["environment"]["sdkPipelineOptions"]["options"]
    assert options["greeting"] == "hi" and options["output"] == "/tmp/out"
    assert options["temp_location"] == "/tmp/t" and options["max_num_workers"] == 3
    assert "x1" in job["environment"]["experiments"]
    assert job["labels"] == {"team": "a"} and job["name"] == "greet"
    # The template's staged pipeline came along.
    assert options["pipelineUrl"].endswith("pipeline.pb")


def test_launch_validates_parameters_against_metadata(df, project, template):
    with pytest.raises(HttpError) as err:
        templates(df).launch(projectId=project, location=REGION, gcsPath=template, body={
            "jobName": "bad", "parameters": {"greeting": "HI!", "colour": "red"}}).execute()
    assert err.value.status_code == 400
    error = error_of(err)
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"].startswith("The template parameters are invalid. Details: ")
    violations = {v["parameter"]: v["description"] for v in error["details"][0]["parameterViolations"]}
    assert set(violations) == {"output", "greeting", "colour"}
    assert "Missing required" in violations["output"] and "Unrecognized" in violations["colour"]
    assert not df.projects().locations().jobs().list(projectId=project, location=REGION).execute().get("jobs")


def test_validate_only_creates_nothing(df, project, template):
    out = templates(df).launch(projectId=project, location=REGION, gcsPath=template, validateOnly=True,
                               body={"jobName": "check", "parameters": {"output": "/tmp/o"}}).execute()
    assert out == {}
    assert not df.projects().locations().jobs().list(projectId=project, location=REGION).execute().get("jobs")


def test_launch_applies_job_name_rules(df, project, template):
    body = {"jobName": "same", "parameters": {"output": "/tmp/o"}}
    templates(df).launch(projectId=project, location=REGION, gcsPath=template, body=body).execute()
    with pytest.raises(HttpError) as err:
        templates(df).launch(projectId=project, location=REGION, gcsPath=template, body=body).execute()
    assert err.value.status_code == 409
    # update: true replaces the active job of that name.
    out = templates(df).launch(projectId=project, location=REGION, gcsPath=template,
                               body={**body, "update": True}).execute()
    assert out["job"]["replaceJobId"]


def test_create_from_template_returns_the_job(df, project, template, check):
    job = templates(df).create(projectId=project, location=REGION, body={
        "gcsPath": "gs://bucket/templates/bare", "jobName": "bare-job", "parameters": {"anything": "goes"}}).execute()
    check(job, "Job")
    assert job["name"] == "bare-job" and job["currentState"] == "JOB_STATE_PENDING"


def test_paths_escaping_their_bucket_are_refused(df, project, template):
    with pytest.raises(HttpError) as err:
        templates(df).get(projectId=project, location=REGION, gcsPath="gs://bucket/../../headrace.db").execute()
    assert err.value.status_code == 400


def test_launched_template_runs_to_done_with_its_parameters(server, project, template, tmp_path):
    from tests.conftest import discovery_client, start_server_with_workers

    pool = start_server_with_workers(server.data_dir / "template-pool", workers=1)
    try:
        (pool.data_dir / "gcs").symlink_to(server.data_dir / "gcs")
        df = discovery_client(pool.url)
        out = templates(df).launch(projectId=project, location=REGION, gcsPath=template, body={
            "jobName": "greet-run", "parameters": {"greeting": "hi", "output": str(tmp_path / "out")}}).execute()
        jobs = df.projects().locations().jobs()
        import time

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            job = jobs.get(projectId=project, location=REGION, jobId=out["job"]["id"]).execute()
            if job["currentState"] in ("JOB_STATE_DONE", "JOB_STATE_FAILED"):
                break
            time.sleep(0.2)
        assert job["currentState"] == "JOB_STATE_DONE", job
        lines = sorted(line for f in tmp_path.glob("out*") for line in f.read_text().splitlines())
        assert lines == ["hi a", "hi b"]  # the launch parameter reached the ValueProvider
    finally:
        pool.stop()
