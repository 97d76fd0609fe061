"""A job's pipeline graph as Dataflow shows it, computed from the Beam pipeline proto that
Beam's DataflowRunner staged (runner v2 submits no `steps`; Dataflow derives them).

- `steps`: one Step per primitive transform, in the order Beam applied them, named s1, s2, ...
  with the kinds and properties of Beam's former Dataflow translation (`user_name`,
  `output_info`, `parallel_input`, `inputs`, `non_parallel_inputs`).
- `pipelineDescription`: the same transforms as TransformSummaries, the pipeline options'
  display data, a hash of the step names, and the fused stages once a worker reports them.

Pure functions over the proto, except `from_staged`, which reads it. docs/execution.md says what
was chosen where Dataflow's own graph is not documented.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

from headrace import wire
from headrace.errors import invalid
from headrace.storage import Storage

PAR_DO, IMPULSE, FLATTEN = "beam:transform:pardo:v1", "beam:transform:impulse:v1", "beam:transform:flatten:v1"
# A primitive's URN -> (Step kind, as Beam's former Dataflow translation named it; TransformSummary kind).
KINDS = {
    PAR_DO: ("ParallelDo", "PAR_DO_KIND"),
    "beam:transform:group_by_key:v1": ("GroupByKey", "GROUP_BY_KEY_KIND"),
    FLATTEN: ("Flatten", "FLATTEN_KIND"),
    IMPULSE: ("ParallelRead", "READ_KIND"),
    "beam:transform:read:v1": ("ParallelRead", "READ_KIND"),
    "beam:transform:teststream:v1": ("ParallelRead", "READ_KIND"),
    # Run by the SDK harness like any DoFn.
    "beam:transform:window_into:v1": ("ParallelDo", "PAR_DO_KIND"),
    "beam:transform:map_windows:v1": ("ParallelDo", "PAR_DO_KIND"),
    "beam:transform:merge_windows:v1": ("ParallelDo", "PAR_DO_KIND"),
    "beam:transform:to_string:v1": ("ParallelDo", "PAR_DO_KIND"),
}
# Composites that happen to have no parts (an identity PTransform) run nothing: no step.
COMPOSITES = {"", "beam:transform:generic_composite:v1", "beam:transform:pickled_python:v1"}
PYTHON_MAIN = "None"  # the Python SDK's tag for a main output
LABELLED = "beam:display_data:labelled:v1"


def from_staged(job: dict, storage: Storage) -> dict:
    """The `steps` and `pipelineDescription` a job Beam submitted lacks, from its staged
    pipeline; {} when that cannot be read or is not the one submitted: creating a job never
    fails for that (the worker fails the job with the reason)."""
    try:
        sdk = job.get("environment", {}).get("sdkPipelineOptions") or {}
        url, expected = sdk["options"].get("pipelineUrl"), sdk["options"].get("pipelineProtoHash")
        data = storage.read_bytes(url)
        if expected and hashlib.sha256(data).hexdigest() != expected:
            return {}  # overwritten by a later submission to the same staging location
        graph = describe(data, sdk.get("display_data") or [])
    except Exception:  # noqa: BLE001 - none staged, unreadable, corrupt: no graph, the job runs on
        return {}
    return {k: v for k, v in graph.items() if not job.get(k)}  # what the submitter sent stands


def describe(data: bytes, options_display_data: list) -> dict:
    from apache_beam.portability.api import beam_runner_api_pb2

    pipeline = beam_runner_api_pb2.Pipeline.FromString(data)
    leaves = _primitives(pipeline)
    names = {tid: f"s{i}" for i, (tid, _) in enumerate(leaves, 1)}
    outputs: dict[str, tuple[str, str, str]] = {}  # PCollection -> (step, output name, user name)
    for tid, transform in leaves:
        main = _main_output(transform)
        for tag, pcollection in transform.outputs.items():
            name = "out" if tag == main else tag
            outputs[pcollection] = (names[tid], name, f"{transform.unique_name}.{name}")
    steps, summaries = [], []
    for tid, transform in leaves:
        step_kind, kind = KINDS.get(transform.spec.urn, (transform.spec.urn, "UNKNOWN_KIND"))
        steps.append({"kind": step_kind, "name": names[tid],
                      "properties": _properties(tid, transform, outputs, beam_runner_api_pb2)})
        summaries.append({
            "kind": kind, "id": tid, "name": transform.unique_name,
            "displayData": [_labelled(item, beam_runner_api_pb2) for item in transform.display_data
                            if item.urn == LABELLED],
            "outputCollectionName": [outputs[pc][2] for pc in transform.outputs.values()],
            "inputCollectionName": [outputs[pc][2] for pc in transform.inputs.values() if pc in outputs]})
    step_names = "\n".join(t.unique_name for _, t in leaves).encode()
    return {"steps": steps, "pipelineDescription": {
        "originalPipelineTransform": summaries,
        "displayData": [_option_item(item) for item in options_display_data if isinstance(item, dict)],
        "stepNamesHash": hashlib.sha256(step_names).hexdigest()}}


def _primitives(pipeline) -> list:
    """(id, transform) of every transform that runs, depth first from the roots: the order
    Beam applied them, so every step comes after the steps producing its inputs."""
    transforms = pipeline.components.transforms
    found, seen = [], set()
    pending = list(reversed(pipeline.root_transform_ids))
    while pending:
        tid = pending.pop()
        if tid in seen or tid not in transforms:
            continue  # a malformed proto does not loop
        seen.add(tid)
        transform = transforms[tid]
        if transform.subtransforms:
            pending.extend(reversed(transform.subtransforms))
        elif transform.spec.urn not in COMPOSITES:
            found.append((tid, transform))
    return found


def _main_output(transform) -> str | None:
    tags = sorted(transform.outputs)
    if PYTHON_MAIN in transform.outputs or not tags:
        return PYTHON_MAIN
    return tags[0]


def _side_inputs(transform, api) -> set[str]:
    if transform.spec.urn != PAR_DO:
        return set()
    return set(api.ParDoPayload.FromString(transform.spec.payload).side_inputs)


def _properties(tid: str, transform, outputs: dict, api) -> dict:
    def reference(pcollection: str) -> dict | None:
        if pcollection not in outputs:
            return None
        step, output, _ = outputs[pcollection]
        return {"@type": "OutputReference", "step_name": step, "output_name": output}

    side = _side_inputs(transform, api)
    main = [transform.inputs[k] for k in sorted(transform.inputs, key=_input_order) if k not in side]
    properties: dict = {"user_name": transform.unique_name,
                        "output_info": [{"user_name": outputs[pc][2], "output_name": outputs[pc][1]}
                                        for pc in transform.outputs.values()]}
    if transform.spec.urn == FLATTEN:
        properties["inputs"] = [r for r in map(reference, main) if r]
    elif main and reference(main[0]):
        properties["parallel_input"] = reference(main[0])
    if side:
        properties["non_parallel_inputs"] = {k: reference(transform.inputs[k]) for k in sorted(side)
                                             if k in transform.inputs and reference(transform.inputs[k])}
    if transform.spec.urn == PAR_DO:
        properties["serialized_fn"] = tid  # as Beam sent it for the Fn API: the proto's transform id
    elif transform.spec.urn == IMPULSE:
        properties["format"] = "impulse"
    return properties


def _input_order(key: str):
    # Flatten's inputs are keyed "0", "1", ... "10": in number order, not text order.
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def _labelled(item, api) -> dict:
    payload = api.LabelledPayload.FromString(item.payload)
    out = {"key": payload.key or payload.label, "namespace": payload.namespace, "label": payload.label}
    which = payload.WhichOneof("value")
    if which == "string_value":
        out["strValue"] = payload.string_value
    elif which == "bool_value":
        out["boolValue"] = payload.bool_value
    elif which == "double_value":
        out["floatValue"] = payload.double_value
    elif which == "int_value":
        out["int64Value"] = str(payload.int_value)
    return out


def _option_item(item: dict) -> dict:
    """Beam's display data dict ({key, namespace, type, value, shortValue, url}) as DisplayData."""
    out = {"key": str(item.get("key", "")), "namespace": str(item.get("namespace", ""))}
    value, kind = item.get("value"), item.get("type")
    if kind == "BOOLEAN" and isinstance(value, bool):
        out["boolValue"] = value
    elif kind == "INTEGER" and isinstance(value, (int, float)):
        out["int64Value"] = str(int(value))
    elif kind == "FLOAT" and isinstance(value, (int, float)):
        out["floatValue"] = float(value)
    elif kind == "DURATION" and isinstance(value, (int, float)):  # Beam sends milliseconds
        out["durationValue"] = wire.format_duration(value / 1000)
    elif kind == "TIMESTAMP" and isinstance(value, (int, float)):  # milliseconds since the epoch
        epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
        out["timestampValue"] = wire.format_time(epoch + timedelta(milliseconds=value))
    elif kind in ("CLASS", "JAVA_CLASS"):
        out["javaClassValue"] = str(value)
    else:
        out["strValue"] = str(value)
    for key, field in (("shortValue", "shortStrValue"), ("label", "label"), ("url", "url")):
        if item.get(key):
            out[field] = str(item[key])
    return out


# ---- the fused stages a worker runs ------------------------------------------------------------
#
# A worker reports its pipeline's fused stages with every status report, as one MetricUpdate
# named headrace/ExecutionStages whose `internal` value (the API's slot for values only the
# service reads) lists {id, state, start, end, transforms, inputs, outputs, prerequisites};
# see docs/execution.md. The service turns them into the job's executionPipelineStage and
# stageStates, and keeps each stage's run (state, start, end) with the work item's attempt.

STAGES_METRIC = ("headrace", "ExecutionStages")
RUN_STATES = {"PENDING": "NOT_STARTED", "RUNNING": "RUNNING", "DONE": "SUCCEEDED"}
JOB_STATES = {"NOT_STARTED": "JOB_STATE_PENDING", "RUNNING": "JOB_STATE_RUNNING", "SUCCEEDED": "JOB_STATE_DONE",
              "FAILED": "JOB_STATE_FAILED", "CANCELLED": "JOB_STATE_CANCELLED"}
STEP_KINDS = {step_kind: kind for step_kind, kind in KINDS.values()}


def take_stages(updates: list[dict]) -> tuple[list[dict], list[dict] | None]:
    """(the report's metric updates, the fused stages it reported or None)."""
    metrics, stages = [], None
    for update in updates:
        name = update.get("name") or {}
        if (name.get("origin"), name.get("name")) != STAGES_METRIC:
            metrics.append(update)
            continue
        stages = update.get("internal")
        if not (isinstance(stages, list) and all(
                isinstance(s, dict) and isinstance(s.get("id"), str) and s.get("state") in RUN_STATES
                for s in stages)):
            raise invalid("The headrace/ExecutionStages metric update's `internal` value must list the "
                          "pipeline's fused stages as {id, state: PENDING, RUNNING or DONE, transforms, "
                          "inputs, outputs, prerequisites}.")
    return metrics, stages


def stage_runs(previous: dict, stages: list[dict], now: str) -> dict:
    """{stage id: {state, start, end}} for the attempt: a stage starts and ends when the worker
    says it did, or else when first reported running (or done) and done."""
    runs = {}
    for stage in stages:
        run = dict(previous.get(stage["id"]) or {}) | {"state": RUN_STATES[stage["state"]]}
        if run["state"] != "NOT_STARTED":
            run.setdefault("start", _time(stage.get("start")) or now)
        if run["state"] == "SUCCEEDED":
            run.setdefault("end", _time(stage.get("end")) or now)
        runs[stage["id"]] = run
    return runs


def _time(value) -> str | None:
    try:
        return wire.format_time(wire.parse_time(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def end_runs(runs: dict, attempt_state: str, now: str) -> dict:
    """The runs once their attempt ended: a failed attempt fails the stages it was running; a
    cancelled one cancels every stage it had not finished."""
    ended = {}
    for stage_id, run in runs.items():
        if attempt_state == "EXECUTION_STATE_FAILED" and run["state"] == "RUNNING":
            run = run | {"state": "FAILED", "end": now}
        elif attempt_state == "EXECUTION_STATE_CANCELLED" and run["state"] in ("RUNNING", "NOT_STARTED"):
            run = run | {"state": "CANCELLED", "end": now}
        ended[stage_id] = run
    return ended


def execution_stages(stages: list[dict], steps: list[dict]) -> list[dict]:
    """One ExecutionStageSummary per fused stage, its transforms named after the job's steps."""
    step_of = {s.get("properties", {}).get("user_name"): s for s in steps if isinstance(s, dict)}
    summaries = []
    for stage in stages:
        transforms = _entries(stage, "transforms")
        originals = [step_of[t["original"]] for t in transforms if t["original"] in step_of]
        summaries.append({
            "name": stage["id"], "id": stage["id"],
            "kind": STEP_KINDS.get(originals[0].get("kind"), "UNKNOWN_KIND") if originals else "UNKNOWN_KIND",
            "componentTransform": [_given(name=step_of[t["name"]]["name"] if t["name"] in step_of else t["name"],
                                          userName=t["name"], originalTransform=t["original"])
                                   for t in transforms],
            "inputSource": [_source(t) for t in _entries(stage, "inputs")],
            "outputSource": [_source(t) for t in _entries(stage, "outputs")],
            "prerequisiteStage": [str(p) for p in stage.get("prerequisites") or [] if isinstance(p, (str, int))]})
    return summaries


def _entries(stage: dict, key: str) -> list[dict]:
    """A stage's {name, original} entries; anything else a worker sent is skipped."""
    return [{"name": str(e.get("name", "")), "original": str(e.get("original") or "")}
            for e in stage.get(key) or [] if isinstance(e, dict) and e.get("name")]


def _source(entry: dict) -> dict:
    return _given(name=entry["name"], userName=entry["name"], originalTransformOrCollection=entry["original"])


def _given(**fields) -> dict:
    return {k: v for k, v in fields.items() if v}
