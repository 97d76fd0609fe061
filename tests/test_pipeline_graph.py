"""The job's pipeline graph: `steps` and `pipelineDescription` computed from the pipeline Beam's
DataflowRunner staged, in views ALL and DESCRIPTION (not SUMMARY), through googleapiclient
and GAPIC; a real wordcount runs on the embedded pool of `headrace serve`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from google.cloud import dataflow_v1beta3 as dataflow

from tests.conftest import discovery_client, start_server_with_workers
from tests.test_pipelines import REGION, beam_args, only_job, read_output, write_input

WORDCOUNT = ["Read", "Split", "PairWithOne", "GroupAndSum", "Format", "Write"]  # its transforms' labels


def get(df, project: str, job_id: str, view: str | None = None) -> dict:
    return df.projects().locations().jobs().get(projectId=project, location=REGION, jobId=job_id,
                                                view=view).execute()


def staged_transforms(staging: Path) -> dict:
    from apache_beam.portability.api import beam_runner_api_pb2

    pipeline = beam_runner_api_pb2.Pipeline.FromString((staging / "pipeline.pb").read_bytes())
    return {tid: t for tid, t in pipeline.components.transforms.items()}


# ---- a real wordcount --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    srv = start_server_with_workers(tmp_path_factory.mktemp("graph"), workers=1)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def wordcount(pool, tmp_path_factory):
    """(project, job id, staging dir) of apache_beam.examples.wordcount run to completion."""
    from apache_beam.examples import wordcount

    tmp = tmp_path_factory.mktemp("wordcount")
    project = "p-graph-wordcount"
    write_input(tmp / "words.txt")
    wordcount.run([f"--input={tmp / 'words.txt'}", f"--output={tmp / 'out' / 'counts'}",
                   *beam_args(pool, project, tmp)])
    assert read_output(tmp / "out" / "counts")
    job = only_job(discovery_client(pool.url), project)
    assert job["currentState"] == "JOB_STATE_DONE"
    return project, job["id"], tmp / "staging"


def test_view_all_shows_steps_and_the_pipeline_description(pool, wordcount, check):
    project, job_id, staging = wordcount
    job = get(discovery_client(pool.url), project, job_id, "JOB_VIEW_ALL")
    check(job, "Job")
    steps, description = job["steps"], job["pipelineDescription"]
    transforms = staged_transforms(staging)
    primitives = {tid: t for tid, t in transforms.items() if not t.subtransforms}

    # One step per primitive transform, named s1, s2, ... in the order Beam applied them.
    assert [s["name"] for s in steps] == [f"s{i}" for i in range(1, len(steps) + 1)]
    by_user = {s["properties"]["user_name"]: s for s in steps}
    assert set(by_user) == {t.unique_name for t in primitives.values()}
    assert {name.split("/")[0] for name in by_user} == set(WORDCOUNT)
    assert by_user["Split"]["kind"] == "ParallelDo"
    assert by_user["GroupAndSum/GroupByKey"]["kind"] == "GroupByKey"
    assert by_user["Read/Read/Impulse"]["kind"] == "ParallelRead"
    assert by_user["Split"]["properties"]["output_info"] == [{"user_name": "Split.out", "output_name": "out"}]
    # The steps form the pipeline's graph: each main input is an earlier step's output.
    position = {s["name"]: i for i, s in enumerate(steps)}
    for i, step in enumerate(steps):
        ref = step["properties"].get("parallel_input")
        if ref:
            assert ref["@type"] == "OutputReference" and position[ref["step_name"]] < i
    assert by_user["PairWithOne"]["properties"]["parallel_input"]["step_name"] == by_user["Split"]["name"]
    assert by_user["GroupAndSum/GroupByKey"]["properties"]["parallel_input"]["step_name"] == \
        by_user["PairWithOne"]["name"]
    # A ParDo names its transform in the pipeline proto, as Beam did for the Fn API.
    assert transforms[by_user["Split"]["properties"]["serialized_fn"]].unique_name == "Split"

    summaries = description["originalPipelineTransform"]
    assert [t["name"] for t in summaries] == [s["properties"]["user_name"] for s in steps]
    assert all(transforms[t["id"]].unique_name == t["name"] for t in summaries)
    split = next(t for t in summaries if t["name"] == "Split")
    assert split["kind"] == "PAR_DO_KIND" and split["outputCollectionName"] == ["Split.out"]
    assert any(d["key"] == "fn" and "WordExtractingDoFn" in d.get("strValue", "") for d in split["displayData"])
    gbk = next(t for t in summaries if t["name"] == "GroupAndSum/GroupByKey")
    assert gbk["kind"] == "GROUP_BY_KEY_KIND" and gbk["inputCollectionName"] == ["PairWithOne.out"]
    # Pipeline-level display data: the options as Beam displayed them.
    options = {d["key"]: d for d in description["displayData"]}
    assert options["runner"]["strValue"] == "DataflowRunner" and options["project"]["strValue"] == project
    assert options["no_auth"]["boolValue"] is True
    names = "\n".join(s["properties"]["user_name"] for s in steps).encode()
    assert description["stepNamesHash"] == hashlib.sha256(names).hexdigest()


def test_description_view_has_the_graph_and_summary_does_not(pool, wordcount, check):
    project, job_id, _ = wordcount
    df = discovery_client(pool.url)
    full = get(df, project, job_id, "JOB_VIEW_ALL")
    described = get(df, project, job_id, "JOB_VIEW_DESCRIPTION")
    check(described, "Job")
    assert described["steps"] == full["steps"] and described["pipelineDescription"] == full["pipelineDescription"]
    assert "stageStates" not in described
    for summary in (get(df, project, job_id), get(df, project, job_id, "JOB_VIEW_SUMMARY")):
        check(summary, "Job")
        assert "steps" not in summary and "pipelineDescription" not in summary
    listed = df.projects().locations().jobs().list(projectId=project, location=REGION).execute()["jobs"]
    assert "steps" not in listed[0]


def test_gapic_get_job_views(pool, wordcount):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    project, job_id, _ = wordcount
    client = dataflow.JobsV1Beta3Client(credentials=AnonymousCredentials(), transport="rest",
                                        client_options=ClientOptions(api_endpoint=pool.url))

    def get_job(view):
        return client.get_job(request=dataflow.GetJobRequest(project_id=project, location=REGION,
                                                             job_id=job_id, view=view))

    full = get_job(dataflow.JobView.JOB_VIEW_ALL)
    users = [step.properties["user_name"] for step in full.steps]
    assert "Split" in users and "GroupAndSum/GroupByKey" in users
    assert [t.name for t in full.pipeline_description.original_pipeline_transform] == users
    assert full.pipeline_description.original_pipeline_transform[users.index("Split")].kind == \
        dataflow.KindType.PAR_DO_KIND
    described = get_job(dataflow.JobView.JOB_VIEW_DESCRIPTION)
    assert [s.name for s in described.steps] == [s.name for s in full.steps]
    summary = get_job(dataflow.JobView.JOB_VIEW_SUMMARY)
    assert not summary.steps and not summary.pipeline_description.original_pipeline_transform


def test_the_fused_stages_the_worker_ran(pool, wordcount, check):
    project, job_id, staging = wordcount
    df = discovery_client(pool.url)
    job = get(df, project, job_id, "JOB_VIEW_ALL")
    stages = job["pipelineDescription"]["executionPipelineStage"]
    ids = [s["id"] for s in stages]
    assert len(ids) > 2 and ids == [f"F{i}" for i in range(len(ids))]
    assert stage_states(job) == {"S01": "JOB_STATE_DONE"} | {i: "JOB_STATE_DONE" for i in ids}
    names = {t.unique_name for t in staged_transforms(staging).values()}
    components = [c for s in stages for c in s["componentTransform"]]
    assert {c["originalTransform"] for c in components} <= names
    steps = {s["properties"]["user_name"]: s["name"] for s in job["steps"]}
    assert {"name": steps["Split"], "userName": "Split", "originalTransform": "Split"} in components
    # Combiner lifting: the runner's own transforms are the user's GroupAndSum's.
    assert any(c["originalTransform"] == "GroupAndSum" and c["userName"] != "GroupAndSum" for c in components)
    after_split = [s for s in stages if s.get("prerequisiteStage")]
    assert after_split and all(set(s["prerequisiteStage"]) <= set(ids) for s in after_split)

    summary = details(df, project, job_id)
    check(summary, "JobExecutionDetails")
    assert [s["stageId"] for s in summary["stages"]] == [*ids, "S01"]
    assert {s["state"] for s in summary["stages"]} == {"EXECUTION_STATE_SUCCEEDED"}
    [ran] = details(df, project, job_id, "S01")["workers"]
    split_stage = next(s["id"] for s in stages if "Split" in [c["userName"] for c in s["componentTransform"]])
    on_split = details(df, project, job_id, split_stage)
    check(on_split, "StageExecutionDetails")
    [worker] = on_split["workers"]
    assert worker["workerName"] == ran["workerName"]
    [attempt] = worker["workItems"]
    assert attempt["state"] == "EXECUTION_STATE_SUCCEEDED" and attempt["startTime"] <= attempt["endTime"]
    assert ran["workItems"][0]["startTime"] <= attempt["startTime"] <= attempt["endTime"] <= \
        ran["workItems"][0]["endTime"]


# ---- jobs created by hand: the graph never stands in the way ---------------------------------

def pipeline_bytes() -> bytes:
    import apache_beam as beam

    p = beam.Pipeline()
    p | "Numbers" >> beam.Create([1, 2, 3]) | "Square" >> beam.Map(lambda x: x * x)
    return p.to_runner_api().SerializeToString()


def submit(df, project: str, url: str, digest: str | None = None, **fields) -> dict:
    options = {"pipelineUrl": url} | ({"pipelineProtoHash": digest} if digest else {})
    body = {"name": "by-hand", "environment": {"sdkPipelineOptions": {"options": options}}, **fields}
    return df.projects().locations().jobs().create(projectId=project, location=REGION, body=body,
                                                   view="JOB_VIEW_ALL").execute()


def test_a_staged_pipeline_gives_the_graph_at_create(df, project, tmp_path, check):
    data = pipeline_bytes()
    (tmp_path / "pipeline.pb").write_bytes(data)
    created = submit(df, project, f"file://{tmp_path / 'pipeline.pb'}", hashlib.sha256(data).hexdigest())
    check(created, "Job")
    by_user = {s["properties"]["user_name"]: s for s in created["steps"]}
    assert list(by_user)[0] == "Numbers/Impulse" and list(by_user)[-1] == "Square"
    assert by_user["Square"]["properties"]["parallel_input"]["step_name"] == by_user["Numbers/Map(decode)"]["name"]
    assert get(df, project, created["id"], "JOB_VIEW_ALL")["steps"] == created["steps"]


@pytest.mark.parametrize("case", ["missing", "corrupt", "other-pipeline", "no-url"])
def test_create_succeeds_without_a_graph_when_the_pipeline_is_unusable(df, project, tmp_path, case, check):
    path = tmp_path / "pipeline.pb"
    digest = None
    if case == "corrupt":
        path.write_bytes(b"\x0a\xff\xff garbage")
    elif case == "other-pipeline":
        path.write_bytes(pipeline_bytes())
        digest = hashlib.sha256(b"the pipeline that was submitted").hexdigest()
    created = submit(df, project, "" if case == "no-url" else str(path), digest)
    check(created, "Job")
    assert created["currentState"] == "JOB_STATE_PENDING"
    assert "steps" not in created and "pipelineDescription" not in created


def test_steps_the_submitter_sent_are_kept(df, project, tmp_path):
    data = pipeline_bytes()
    (tmp_path / "pipeline.pb").write_bytes(data)
    own = [{"kind": "ParallelDo", "name": "mine", "properties": {"user_name": "Mine"}}]
    created = submit(df, project, str(tmp_path / "pipeline.pb"), steps=own)
    assert created["steps"] == own
    # The description still comes from the staged pipeline.
    assert "Square" in [t["name"] for t in created["pipelineDescription"]["originalPipelineTransform"]]


# ---- fused stages reported by the worker ------------------------------------------------------

F0_START = "2026-01-02T03:04:05.000006Z"


def stages_update(*states: str) -> dict:
    """What a worker reports: F0 reads and writes a grouping buffer, F1 reads it after F0.
    The worker says when F0 started; F1's times are the reports'."""
    f0 = {"id": "F0", "state": states[0], "prerequisites": [], "start": F0_START,
          "transforms": [{"name": "Numbers/Impulse", "original": "Numbers/Impulse"},
                         {"name": "Square", "original": "Square"}],
          "outputs": [{"name": "Group/Write", "original": "Group"}]}
    f1 = {"id": "F1", "state": states[1], "prerequisites": ["F0"],
          "inputs": [{"name": "Group/Read", "original": "Group"}],
          "transforms": [{"name": "Group/Merge", "original": "Group"}]}
    return {"name": {"origin": "headrace", "name": "ExecutionStages"}, "internal": [f0, f1]}


def lease_and_report(df, project: str, job_id: str, worker: str, *states: str, **status) -> tuple[dict, dict]:
    jobs = df.projects().locations().jobs()
    [item] = jobs.workItems().lease(projectId=project, location=REGION, jobId=job_id,
                                    body={"workerId": worker}).execute()["workItems"]
    answer = report(df, project, item, worker, item["initialReportIndex"], *states, **status)
    return item, answer


def report(df, project: str, item: dict, worker: str, index: str, *states: str, **status) -> dict:
    body = {"workerId": worker, "workItemStatuses": [{
        "workItemId": item["id"], "reportIndex": index, "metricUpdates": [stages_update(*states)], **status}]}
    return df.projects().locations().jobs().workItems().reportStatus(
        projectId=project, location=REGION, jobId=item["jobId"], body=body).execute()["workItemServiceStates"][0]


def stage_states(job: dict) -> dict:
    return {s["executionStageName"]: s["executionStageState"] for s in job.get("stageStates", [])}


def details(df, project: str, job_id: str, stage: str | None = None) -> dict:
    jobs = df.projects().locations().jobs()
    if stage is None:
        return jobs.getExecutionDetails(projectId=project, location=REGION, jobId=job_id).execute()
    return jobs.stages().getExecutionDetails(projectId=project, location=REGION, jobId=job_id,
                                             stageId=stage).execute()


def test_reported_fused_stages_become_the_jobs_stages(df, project, tmp_path, check):
    data = pipeline_bytes()
    (tmp_path / "pipeline.pb").write_bytes(data)
    job = submit(df, project, str(tmp_path / "pipeline.pb"))
    item, answer = lease_and_report(df, project, job["id"], "w-1", "RUNNING", "PENDING")

    running = get(df, project, job["id"], "JOB_VIEW_ALL")
    check(running, "Job")
    assert stage_states(running) == {"S01": "JOB_STATE_RUNNING", "F0": "JOB_STATE_RUNNING", "F1": "JOB_STATE_PENDING"}
    f0, f1 = running["pipelineDescription"]["executionPipelineStage"]
    steps = {s["properties"]["user_name"]: s["name"] for s in running["steps"]}
    assert f0["name"] == "F0" and f0["kind"] == "READ_KIND"  # it starts at the user's Impulse
    assert f0["componentTransform"][1] == {"name": steps["Square"], "userName": "Square", "originalTransform": "Square"}
    assert f0["outputSource"] == [{"name": "Group/Write", "userName": "Group/Write", "originalTransformOrCollection": "Group"}]
    assert f1["prerequisiteStage"] == ["F0"] and f1["inputSource"][0]["name"] == "Group/Read"
    # The stages are not metrics of the job.
    metrics = df.projects().locations().jobs().getMetrics(projectId=project, location=REGION,
                                                          jobId=job["id"]).execute()
    assert not any(m["name"]["name"] == "ExecutionStages" for m in metrics.get("metrics", []))

    summary = details(df, project, job["id"])
    check(summary, "JobExecutionDetails")
    assert [(s["stageId"], s["state"]) for s in summary["stages"]] == [
        ("F0", "EXECUTION_STATE_RUNNING"), ("F1", "EXECUTION_STATE_NOT_STARTED"), ("S01", "EXECUTION_STATE_RUNNING")]
    assert summary["stages"][0]["startTime"] == F0_START and "startTime" not in summary["stages"][1]
    on_f0 = details(df, project, job["id"], "F0")
    check(on_f0, "StageExecutionDetails")
    [worker] = on_f0["workers"]
    assert worker["workerName"] == "w-1" and worker["workItems"][0]["taskId"] == item["id"]
    assert worker["workItems"][0]["state"] == "EXECUTION_STATE_RUNNING"
    assert details(df, project, job["id"], "F1") == {}  # nobody has worked on it yet

    report(df, project, item, "w-1", answer["nextReportIndex"], "DONE", "DONE", completed=True)
    done = get(df, project, job["id"], "JOB_VIEW_ALL")
    assert done["currentState"] == "JOB_STATE_DONE"
    assert set(stage_states(done).values()) == {"JOB_STATE_DONE"} and len(stage_states(done)) == 3
    stages = details(df, project, job["id"])["stages"]
    assert {s["state"] for s in stages} == {"EXECUTION_STATE_SUCCEEDED"}
    assert all(s["startTime"] <= s["endTime"] for s in stages)
    assert stages[1]["startTime"] >= job["createTime"]  # F1: when it was first reported running
    [worker] = details(df, project, job["id"], "F1")["workers"]
    assert worker["workItems"][0]["state"] == "EXECUTION_STATE_SUCCEEDED"


def test_a_failed_attempt_fails_its_running_stage_and_the_retry_runs_it_again(df, project, check):
    job = submit(df, project, "")
    item, answer = lease_and_report(df, project, job["id"], "w-1", "DONE", "RUNNING")
    report(df, project, item, "w-1", answer["nextReportIndex"], "DONE", "RUNNING", completed=True,
           errors=[{"code": 2, "message": "boom"}])
    # The item waits for its retry: the stage is not over, though its attempt failed.
    assert stage_states(get(df, project, job["id"], "JOB_VIEW_ALL"))["F1"] == "JOB_STATE_RUNNING"
    [worker] = details(df, project, job["id"], "F1")["workers"]
    assert [w["state"] for w in worker["workItems"]] == ["EXECUTION_STATE_FAILED"]

    item, _ = lease_and_report(df, project, job["id"], "w-2", "RUNNING", "PENDING")
    assert stage_states(get(df, project, job["id"], "JOB_VIEW_ALL"))["F1"] == "JOB_STATE_PENDING"
    [worker] = details(df, project, job["id"], "F0")["workers"]
    assert worker["workerName"] == "w-2"


def test_a_malformed_stage_report_is_refused(df, project):
    from googleapiclient.errors import HttpError

    job = submit(df, project, "")
    jobs = df.projects().locations().jobs()
    [item] = jobs.workItems().lease(projectId=project, location=REGION, jobId=job["id"],
                                    body={"workerId": "w-1"}).execute()["workItems"]
    bad = {"name": {"origin": "headrace", "name": "ExecutionStages"}, "internal": [{"id": "F0", "state": "ALMOST"}]}
    with pytest.raises(HttpError) as error:
        jobs.workItems().reportStatus(projectId=project, location=REGION, jobId=job["id"], body={
            "workerId": "w-1", "workItemStatuses": [{"workItemId": item["id"], "reportIndex": item["initialReportIndex"],
                                                     "metricUpdates": [bad]}]}).execute()
    assert error.value.status_code == 400 and b"ExecutionStages" in error.value.content
