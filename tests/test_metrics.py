"""jobs.getMetrics, fed by a worker's workItems:reportStatus, read by googleapiclient, GAPIC
and Beam's own DataflowMetrics."""

from __future__ import annotations

import json

import pytest
from googleapiclient.errors import HttpError

from headrace import wire

REGION = "us-central1"


class Worker:
    """Holds a job's work item and reports status the way Dataflow's workers do."""

    def __init__(self, df, project: str, job_id: str, worker_id: str = "w-1"):
        self.items = df.projects().locations().jobs().workItems()
        self.scope = {"projectId": project, "location": REGION, "jobId": job_id}
        self.worker_id = worker_id
        leased = self.items.lease(**self.scope, body={
            "workerId": worker_id, "requestedLeaseDuration": "60s",
            "currentWorkerTime": _now(), "workItemTypes": ["map_task"]}).execute()
        self.item = leased["workItems"][0]
        self.index = self.item["initialReportIndex"]

    def report(self, **status) -> dict:
        body = {"workerId": self.worker_id, "currentWorkerTime": _now(), "workItemStatuses": [
            {"workItemId": self.item["id"], "reportIndex": self.index, **status}]}
        answer = self.items.reportStatus(**self.scope, body=body).execute()
        self.index = answer["workItemServiceStates"][0]["nextReportIndex"]
        return answer


def _now() -> str:
    return wire.format_time(wire.now())


def create_job(df, project: str, name: str = "counting") -> dict:
    return df.projects().locations().jobs().create(projectId=project, location=REGION,
                                                   body={"name": name}).execute()


def get_metrics(df, project: str, job_id: str, **params) -> dict:
    return df.projects().locations().jobs().getMetrics(projectId=project, location=REGION,
                                                       jobId=job_id, **params).execute()


def by_name(response: dict) -> dict:
    """{(origin, name, context without tentative): committed metric}, after checking that
    every metric comes exactly twice, committed and tentative, with the same value."""
    pairs: dict = {}
    for metric in response["metrics"]:
        context = dict(metric["name"].get("context", {}))
        tentative = context.pop("tentative", None) == "true"
        key = (metric["name"]["origin"], metric["name"]["name"], tuple(sorted(context.items())))
        assert tentative not in pairs.setdefault(key, {}), f"{key} reported twice"
        pairs[key][tentative] = metric
    for key, pair in pairs.items():
        assert set(pair) == {False, True}, f"{key} lacks its committed or tentative copy"
        strip = [{k: v for k, v in m.items() if k != "name"} for m in pair.values()]
        assert strip[0] == strip[1], key
    return {key: pair[False] for key, pair in pairs.items()}


def user(name: str, step: str = "s2", namespace: str = "__main__.Fn", **fields) -> dict:
    return {"name": {"origin": "user", "name": name,
                     "context": {"step": step, "namespace": namespace}}, **fields}


def user_key(name: str, step: str = "s2", namespace: str = "__main__.Fn") -> tuple:
    return ("user", name, (("namespace", namespace), ("step", step)))


def test_a_job_without_metrics_answers_an_empty_list(df, http, gapic, project, check):
    job = create_job(df, project)
    got = get_metrics(df, project, job["id"])
    check(got, "JobMetrics")
    assert got["metrics"] == []
    wire.parse_time(got["metricTime"])
    # The project-level alias, raw: the key is there even when empty.
    raw = http.get(f"/v1b3/projects/{project}/jobs/{job['id']}/metrics").json()
    assert raw["metrics"] == [] and raw["metricTime"]
    from google.cloud import dataflow_v1beta3 as dataflow
    reply = gapic["metrics"].get_job_metrics(
        dataflow.GetJobMetricsRequest(project_id=project, location=REGION, job_id=job["id"]))
    assert list(reply.metrics) == []


def test_unknown_job_is_not_found(df, project):
    with pytest.raises(HttpError) as err:
        get_metrics(df, project, "2026-01-01_00_00_00-123")
    assert err.value.status_code == 404
    assert json.loads(err.value.content)["error"]["status"] == "NOT_FOUND"


def test_deltas_merge_by_kind_and_cumulative_values_replace(df, project, check):
    job = create_job(df, project)
    worker = Worker(df, project, job["id"])
    early, late = "2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z"
    worker.report(metricUpdates=[
        user("words", kind="Sum", scalar=5),
        user("longest", kind="MAX", scalar=4),
        user("lengths", kind="Distribution", distribution={"count": 2, "sum": 10, "min": 3, "max": 7}),
        user("lag", gauge={"value": 3, "timestamp": late}),
        user("rows", kind="Sum", scalar=100, cumulative=True),
        {"name": {"origin": "dataflow", "name": "ElementCount",
                  "context": {"original_name": "s2-out0-ElementCount", "output_user_name": "Split-out0"}},
         "kind": "Sum", "scalar": 40},
    ])
    worker.report(metricUpdates=[
        user("words", kind="Sum", scalar=7),
        user("longest", kind="Max", scalar=2),
        user("lengths", kind="distribution", distribution={"count": "1", "sum": "20", "min": 20, "max": 20}),
        user("lag", gauge={"value": 9, "timestamp": early}),  # older than what we have: ignored
        user("rows", kind="Sum", scalar=150, cumulative=True),
    ])
    got = get_metrics(df, project, job["id"])
    check(got, "JobMetrics")
    metrics = by_name(got)
    assert len(got["metrics"]) == 12
    assert metrics[user_key("words")]["scalar"] == 12
    assert metrics[user_key("longest")]["scalar"] == 4
    dist = metrics[user_key("lengths")]["distribution"]
    assert {k: dist[k] for k in ("count", "sum", "min", "max")} == {"count": 3, "sum": 30, "min": 3, "max": 20}
    assert metrics[user_key("lag")]["gauge"] == {"value": 3, "timestamp": "2026-01-01T00:00:02.000000Z"}
    assert metrics[user_key("rows")]["scalar"] == 150
    system = metrics[("dataflow/v1b3", "ElementCount", (("original_name", "s2-out0-ElementCount"),
                                                          ("output_user_name", "Split-out0")))]
    assert system["scalar"] == 40
    for metric in got["metrics"]:
        assert metric["updateTime"] <= got["metricTime"]


def test_counter_updates_are_converted_to_metric_updates(df, project, check):
    job = create_job(df, project)
    worker = Worker(df, project, job["id"])

    def counter(name, kind, origin="USER", **value):
        return {"structuredNameAndMetadata": {
            "name": {"origin": origin, "originNamespace": "ns", "name": name, "originalStepName": "s3",
                     "executionStepName": "F12"},
            "metadata": {"kind": kind}}, **value}

    split = {"highBits": 1, "lowBits": 5}  # 2**32 + 5
    worker.report(counterUpdates=[
        counter("big", "SUM", integer=split),
        counter("peak", "MAX", floatingPoint=2.5),
        counter("avg", "MEAN", integerMean={"sum": {"lowBits": 10}, "count": {"lowBits": 4}}),
        counter("sizes", "DISTRIBUTION", distribution={
            "count": {"lowBits": 2}, "sum": {"lowBits": 9}, "min": {"lowBits": 4}, "max": {"lowBits": 5},
            "sumOfSquares": 41}),
        counter("tags", "SET", stringList={"elements": ["a", "b"]}),
        counter("watermark", "LATEST_VALUE", integerGauge={"value": {"lowBits": 77},
                                                          "timestamp": "2026-01-01T00:00:00Z"}),
        {"nameAndKind": {"name": "s3-out0-ElementCount", "kind": "SUM"}, "integer": {"lowBits": 8},
         "cumulative": True},
    ])
    worker.report(counterUpdates=[
        counter("big", "SUM", integer={"lowBits": 1}),
        counter("tags", "SET", stringList={"elements": ["b", "c"]}),
        {"nameAndKind": {"name": "s3-out0-ElementCount", "kind": "SUM"}, "integer": {"lowBits": 11},
         "cumulative": True},
    ])
    got = get_metrics(df, project, job["id"])
    check(got, "JobMetrics")
    metrics = by_name(got)
    context = (("execution_step", "F12"), ("namespace", "ns"), ("step", "s3"))
    assert metrics[("user", "big", context)]["scalar"] == 2**32 + 6
    assert metrics[("user", "big", context)]["kind"] == "Sum"
    assert metrics[("user", "peak", context)]["scalar"] == 2.5
    assert (metrics[("user", "avg", context)]["meanSum"], metrics[("user", "avg", context)]["meanCount"]) == (10, 4)
    sizes = metrics[("user", "sizes", context)]["distribution"]
    assert (sizes["count"], sizes["sum"], sizes["min"], sizes["max"], sizes["sumOfSquares"]) == (2, 9, 4, 5, 41)
    assert metrics[("user", "tags", context)]["set"] == ["a", "b", "c"]
    assert metrics[("user", "watermark", context)]["gauge"]["value"] == 77
    elements = metrics[("dataflow/v1b3", "ElementCount", (("original_name", "s3-out0-ElementCount"),
                                                           ("output_user_name", "s3-out0")))]
    assert elements["scalar"] == 11


def test_start_time_returns_only_metrics_updated_since(df, project):
    job = create_job(df, project)
    worker = Worker(df, project, job["id"])
    worker.report(metricUpdates=[user("a", kind="Sum", scalar=1), user("b", kind="Sum", scalar=1)])
    first = get_metrics(df, project, job["id"])
    assert {key[1] for key in by_name(first)} == {"a", "b"}
    worker.report(metricUpdates=[user("b", kind="Sum", scalar=2)])
    since = get_metrics(df, project, job["id"], startTime=first["metricTime"])
    assert {key: m["scalar"] for key, m in by_name(since).items()} == {user_key("b"): 3}
    assert len(since["metrics"]) == 2
    later = get_metrics(df, project, job["id"], startTime=since["metricTime"])
    assert later["metrics"] == []
    assert len(get_metrics(df, project, job["id"])["metrics"]) == 4


def test_malformed_updates_are_rejected_and_nothing_is_recorded(df, project):
    job = create_job(df, project)
    worker = Worker(df, project, job["id"])
    bad = [{"metricUpdates": [user("good", kind="Sum", scalar=1), user("words", kind="Sum")]},
           {"metricUpdates": [user("words", kind="Sum", scalar="many")]},
           {"counterUpdates": [{"shortId": "7", "integer": {"lowBits": 1}}]}]
    for status in bad:
        with pytest.raises(HttpError) as err:
            worker.report(**status)
        assert err.value.status_code == 400
        error = json.loads(err.value.content)["error"]
        assert error["status"] == "INVALID_ARGUMENT"
        assert "words" in error["message"] or "shortId" in error["message"]
    assert get_metrics(df, project, job["id"])["metrics"] == []


def test_beam_dataflow_metrics_reads_them_with_user_step_names(server, df, project):
    import apache_beam as beam
    from apache_beam.metrics.cells import DistributionData, DistributionResult
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.dataflow.dataflow_metrics import DataflowMetrics
    from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult
    from apache_beam.runners.dataflow.internal import apiclient

    options = PipelineOptions([
        f"--dataflow_endpoint={server.url}", "--no_auth", f"--project={project}",
        f"--region={REGION}", "--temp_location=gs://bucket/tmp",
        "--experiments=use_portable_job_submission"])
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | beam.Create(["a b"]) | "Split" >> beam.FlatMap(str.split)
    proto = pipeline.to_runner_api()
    # Runner v2 workers name steps by their transform ids; Beam maps them back to user names.
    step = next(tid for tid, t in proto.components.transforms.items() if t.unique_name == "Split")

    job = create_job(df, project, name="beam-metrics")
    worker = Worker(df, project, job["id"])
    worker.report(metricUpdates=[
        user("words", step=step, kind="Sum", scalar=26181),
        user("word_lengths", step=step, kind="Distribution",
             distribution={"count": 2, "sum": 18, "min": 2, "max": 16}),
        user("queue", step=step, gauge={"value": 5}),
    ], counterUpdates=[{"nameAndKind": {"name": "s2-out0-ElementCount", "kind": "SUM"},
                        "integer": {"lowBits": 42}}])

    client = apiclient.DataflowApplicationClient(options)
    result = DataflowPipelineResult(client.get_job(job["id"]), None)
    metrics = DataflowMetrics(client, result, apiclient.Job(options, proto))
    query = metrics.query()
    assert [(r.key.step, r.key.metric.namespace, r.key.metric.name, r.committed, r.attempted)
            for r in query["counters"]] == [("Split", "__main__.Fn", "words", 26181, 26181)]
    expected = DistributionResult(DistributionData(18, 2, 2, 16))
    assert [(r.key.step, r.key.metric.name, r.committed, r.attempted) for r in query["distributions"]] == [
        ("Split", "word_lengths", expected, expected)]
    # Beam's Python DataflowMetrics never lists gauges (query() hard-codes []); the gauge is
    # still keyed by the user's step, with the {value, timestamp} Beam's Java reader expects.
    everything = {r.key.metric.name: r for r in metrics.all_metrics()}
    assert everything["queue"].key.step == "Split"
    raw = by_name(get_metrics(df, project, job["id"]))[user_key("queue", step=step)]
    assert raw["gauge"]["value"] == 5 and wire.parse_time(raw["gauge"]["timestamp"])
    system = everything["ElementCount"]
    assert (system.key.metric.namespace, system.committed, system.attempted) == ("dataflow/v1b3", 42, 42)
    assert system.key.labels == {"original_name": "s2-out0-ElementCount", "output_user_name": "s2-out0"}
