"""Flex templates built with `headrace flex-template build` and launched through the API.

The template's requirement is a wheel written here (offline) and shipped with the source; the
launcher runs the template's real main in an environment with it installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
from googleapiclient.errors import HttpError

from tests.wheels import build_wheel

REGION = "us-central1"

MAIN = textwrap.dedent('''
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    import headrace_greeting  # from the template's requirements: fails unless they were installed

    class Options(PipelineOptions):
        @classmethod
        def _add_argparse_args(cls, parser):
            parser.add_argument("--output", required=True)
            parser.add_argument("--who", default="world")

    options = PipelineOptions()
    custom = options.view_as(Options)
    with beam.Pipeline(options=options) as p:
        (p | beam.Create([custom.who]) | beam.Map(headrace_greeting.greet) | beam.io.WriteToText(custom.output))
''')

METADATA = {"name": "Greeter", "parameters": [
    {"name": "output", "label": "Output", "helpText": "Output prefix", "regexes": ["^/.+"]},
    {"name": "who", "label": "Who", "helpText": "Whom to greet", "isOptional": True}]}


def flex_build(server, spec, src, *env, metadata=None):
    args = [sys.executable, "-m", "headrace", "flex-template", "build", spec, "--py-path", str(src),
            "--sdk-language", "PYTHON", "--data-dir", str(server.data_dir)]
    for pair in env:
        args += ["--env", pair]
    if metadata:
        args += ["--metadata-file", str(metadata)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def specs(server, tmp_path_factory):
    work = tmp_path_factory.mktemp("flex")
    (work / "src").mkdir()
    build_wheel(work / "src", "headrace_greeting", "0.1", "def greet(who):\n    return f'hello {who}'\n")
    (work / "src" / "main.py").write_text(MAIN)
    (work / "src" / "requirements.txt").write_text("headrace-greeting==0.1\n")
    (work / "metadata.json").write_text(json.dumps(METADATA))
    good = flex_build(server, "gs://bucket/flex/greeter.json", work / "src",
                      "FLEX_TEMPLATE_PYTHON_PY_FILE=main.py", "FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE=requirements.txt",
                      metadata=work / "metadata.json")
    assert good.returncode == 0, good.stderr
    (work / "bad").mkdir()
    (work / "bad" / "main.py").write_text("raise SystemExit('the launcher cannot find its config file')\n")
    bad = flex_build(server, "gs://bucket/flex/broken.json", work / "bad", "FLEX_TEMPLATE_PYTHON_PY_FILE=main.py")
    assert bad.returncode == 0, bad.stderr
    (server.data_dir / "gcs" / "bucket" / "flex" / "image.json").write_text(json.dumps(
        {"image": "gcr.io/my-project/my-template:latest", "sdkInfo": {"language": "PYTHON"}}))
    return {"good": "gs://bucket/flex/greeter.json", "bad": "gs://bucket/flex/broken.json",
            "image": "gs://bucket/flex/image.json"}


def launch(df, project, spec, parameters, **extra):
    return df.projects().locations().flexTemplates().launch(projectId=project, location=REGION, body={
        "launchParameter": {"jobName": "greet", "containerSpecGcsPath": spec, "parameters": parameters},
        **extra}).execute()


def wait_state(df, project, job_id, states, timeout=180):
    jobs = df.projects().locations().jobs()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs.get(projectId=project, location=REGION, jobId=job_id, view="JOB_VIEW_ALL").execute()
        if job["currentState"] in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['currentState']}")


def test_build_writes_a_flex_spec(df, project, specs, check):
    out = df.projects().locations().templates().get(projectId=project, location=REGION,
                                                    gcsPath=specs["good"]).execute()
    check(out, "GetTemplateResponse")
    assert out["templateType"] == "FLEX" and out["metadata"]["name"] == "Greeter"


def test_launch_runs_the_launcher_and_attaches_its_job(df, project, specs, check, tmp_path):
    out = launch(df, project, specs["good"], {"output": str(tmp_path / "out"), "who": "flex"})
    check(out, "LaunchFlexTemplateResponse")
    assert out["job"]["currentState"] == "JOB_STATE_QUEUED"  # answered at once
    job = wait_state(df, project, out["job"]["id"], {"JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_DONE",
                                                    "JOB_STATE_FAILED"})
    assert job["currentState"] != "JOB_STATE_FAILED", job
    options = job["environment"]["sdkPipelineOptions"]["options"]
    assert options["output"] == str(tmp_path / "out") and options["who"] == "flex"
    assert options["pipelineUrl"].endswith("pipeline.pb") and job["name"] == "greet"


def test_launch_validates_parameters(df, project, specs):
    with pytest.raises(HttpError) as err:
        launch(df, project, specs["good"], {"who": "x"})
    assert err.value.status_code == 400
    assert "Missing required parameter: output" in json.loads(err.value.content)["error"]["message"]


def test_validate_only_creates_nothing(df, project, specs):
    assert launch(df, project, specs["good"], {"output": "/tmp/x"}, validateOnly=True) == {}
    assert not df.projects().locations().jobs().list(projectId=project, location=REGION).execute().get("jobs")


def test_container_images_get_a_clear_error(df, project, specs):
    with pytest.raises(HttpError) as err:
        launch(df, project, specs["image"], {})
    error = json.loads(err.value.content)["error"]
    assert error["status"] == "FAILED_PRECONDITION"
    assert "no container engine" in error["message"] and "headrace flex-template build" in error["message"]


def test_failing_launcher_fails_the_job_with_its_output(df, project, specs):
    out = launch(df, project, specs["bad"], {})
    wait_state(df, project, out["job"]["id"], {"JOB_STATE_FAILED"})
    texts = [m["messageText"] for m in df.projects().locations().jobs().messages().list(
        projectId=project, location=REGION, jobId=out["job"]["id"],
        minimumImportance="JOB_MESSAGE_ERROR").execute()["jobMessages"]]
    assert any("the launcher cannot find its config file" in t for t in texts)
    assert any("Template launch failed" in t for t in texts)


def test_build_refuses_missing_main(server, tmp_path):
    (tmp_path / "x.py").write_text("")
    done = flex_build(server, "gs://bucket/flex/none.json", tmp_path)
    assert done.returncode != 0 and "FLEX_TEMPLATE_PYTHON_PY_FILE" in done.stderr


@pytest.fixture(scope="module")
def pool(specs, server):
    """A server with a worker, on the same data dir, so the built templates are there."""
    from tests.conftest import start_server_with_workers

    srv = start_server_with_workers(server.data_dir / "flex-pool", workers=1)
    (srv.data_dir / "gcs").symlink_to(server.data_dir / "gcs")
    yield srv
    srv.stop()


def test_launched_template_runs_to_done_with_its_requirement(pool, project, specs, tmp_path):
    from tests.conftest import discovery_client

    df = discovery_client(pool.url)
    out = launch(df, project, specs["good"], {"output": str(tmp_path / "greetings"), "who": "flex"})
    job = wait_state(df, project, out["job"]["id"], {"JOB_STATE_DONE", "JOB_STATE_FAILED"})
    assert job["currentState"] == "JOB_STATE_DONE", job
    lines = [line for f in tmp_path.glob("greetings*") for line in f.read_text().splitlines()]
    assert lines == ["hello flex"]  # the requirement ran on the worker too
