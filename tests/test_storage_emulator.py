"""gs:// paths through a GCS-compatible server when STORAGE_EMULATOR_HOST is set.

A real emulator (gcp-storage-emulator) holds the objects; google-cloud-storage, which honours
the same variable, puts them there, as a user's own tooling would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from google.auth.credentials import AnonymousCredentials
from googleapiclient.errors import HttpError

from tests.conftest import discovery_client, free_port, start_server

REGION = "us-central1"
TEMPLATE = {"name": "from-gcs", "type": "JOB_TYPE_BATCH",
            "environment": {"sdkPipelineOptions": {"options": {"pipelineUrl": "gs://bkt/staging/pipeline.pb"}}}}
METADATA = {"name": "Emulated", "parameters": [{"name": "output", "label": "Output", "helpText": "Where"}]}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("gcs") / "emulator.log"
    process = subprocess.Popen([str(Path(sys.executable).parent / "gcp-storage-emulator"), "start",
                                "--port", str(port), "--in-memory", "--default-bucket", "bkt"],
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    host = f"http://localhost:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{host}/storage/v1/b", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    yield host
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def bucket(emulator, monkeypatch_module):
    from google.cloud import storage

    monkeypatch_module.setenv("STORAGE_EMULATOR_HOST", emulator)
    client = storage.Client(project="test", credentials=AnonymousCredentials())
    return client.bucket("bkt")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def emulated(emulator, tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("headrace-gcs"), env={"STORAGE_EMULATOR_HOST": emulator})
    yield srv
    srv.stop()


def test_templates_are_read_from_the_emulator(emulated, bucket, project, check):
    bucket.blob("templates/t1").upload_from_string(json.dumps(TEMPLATE))
    bucket.blob("templates/t1_metadata").upload_from_string(json.dumps(METADATA))
    df = discovery_client(emulated.url)
    templates = df.projects().locations().templates()
    got = templates.get(projectId=project, location=REGION, gcsPath="gs://bkt/templates/t1").execute()
    check(got, "GetTemplateResponse")
    assert got["metadata"]["name"] == "Emulated"
    job = templates.launch(projectId=project, location=REGION, gcsPath="gs://bkt/templates/t1",
                           body={"jobName": "emulated", "parameters": {"output": "/tmp/o"}}).execute()["job"]
    full = df.projects().locations().jobs().get(projectId=project, location=REGION, jobId=job["id"],
                                                view="JOB_VIEW_ALL").execute()
    assert full["environment"]["sdkPipelineOptions"]["options"]["output"] == "/tmp/o"
    # Nothing was written to the local gcs root: the emulator is the storage.
    assert not (emulated.data_dir / "gcs").exists()


def test_missing_object_is_404_naming_it(emulated, bucket, project):
    df = discovery_client(emulated.url)
    with pytest.raises(HttpError) as err:
        df.projects().locations().templates().get(projectId=project, location=REGION,
                                                  gcsPath="gs://bkt/templates/none").execute()
    assert err.value.status_code == 404 and "gs://bkt/templates/none" in json.loads(err.value.content)["error"]["message"]


def test_flex_template_build_writes_to_the_emulator(emulator, bucket, tmp_path):
    (tmp_path / "main.py").write_text("print('hi')\n")
    done = subprocess.run([sys.executable, "-m", "headrace", "flex-template", "build", "gs://bkt/flex/spec.json",
                           "--py-path", str(tmp_path), "--env", "FLEX_TEMPLATE_PYTHON_PY_FILE=main.py",
                           "--sdk-language", "PYTHON", "--data-dir", str(tmp_path / "data")],
                          env={**os.environ, "STORAGE_EMULATOR_HOST": emulator}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    spec = json.loads(bucket.blob("flex/spec.json").download_as_bytes())
    assert spec["image"].startswith("gs://bkt/flex/headrace-sources/")
    assert bucket.blob(spec["image"][len("gs://bkt/"):]).exists()
    assert not (tmp_path / "data" / "gcs").exists()
