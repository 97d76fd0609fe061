"""A running pipeline's metrics as the MetricUpdates a status report carries.

User metrics go under origin "user" with the step and namespace in the context, the step
being the pipeline proto's transform id: Beam's `DataflowMetrics` maps that id back to the
user's transform name through the job graph, as it does for Dataflow's Runner v2. Element
counts are Dataflow's system metric `ElementCount`, named after the producing step and its
output (`<step>-out0-ElementCount`), the way Dataflow names them.

Every update is cumulative: it holds the work item's whole total so far, so a report can be
retried or lost without counting anything twice, and a retried work item starts over.
"""

from __future__ import annotations

from datetime import datetime, timezone

from headrace import wire

USER, SYSTEM = "user", "dataflow/v1b3"
MAIN_OUTPUT = "None"  # the tag Beam's Python SDK gives a transform's main output
STAGES = {"origin": "headrace", "name": "ExecutionStages"}
STAGE_KEYS = ("id", "state", "transforms", "inputs", "outputs", "prerequisites")


def metric_updates(metrics: dict) -> list[dict]:
    updates = []
    for counter in metrics.get("counters", []):
        updates.append(_user(counter, kind="Sum", scalar=counter["value"]))
    for dist in metrics.get("distributions", []):
        updates.append(_user(dist, kind="Distribution", distribution={
            "count": dist["count"], "sum": dist["sum"], "min": dist["min"], "max": dist["max"]}))
    for gauge in metrics.get("gauges", []):
        stamp = wire.format_time(datetime.fromtimestamp(gauge["timestamp"], timezone.utc)) if gauge.get("timestamp") else None
        updates.append(_user(gauge, gauge={"value": gauge["value"], **({"timestamp": stamp} if stamp else {})}))
    for string_set in metrics.get("string_sets", []):
        updates.append(_user(string_set, kind="Set", set=list(string_set["values"])))
    for count in metrics.get("element_counts", []):
        output = f"{count['producer']}-{_output_name(count['output'])}"
        updates.append({"name": {"origin": SYSTEM, "name": "ElementCount",
                                 "context": {"original_name": f"{output}-ElementCount", "output_user_name": output}},
                        "kind": "Sum", "scalar": count["count"], "cumulative": True})
    return updates


def stage_update(stages: list[dict]) -> dict:
    """The pipeline's fused stages, their state and when they started and ended
    (execution/monitoring.py), for the job's stageStates, execution graph and execution
    details. `internal` is the API's slot for a value only the service reads: it is not a
    metric of the job (docs/execution.md)."""
    return {"name": STAGES, "internal": [
        {k: s[k] for k in STAGE_KEYS if k in s}
        | {k: wire.format_time(datetime.fromtimestamp(s[k], timezone.utc)) for k in ("start", "end") if s.get(k)}
        for s in stages]}


def _user(metric: dict, **value) -> dict:
    context = {"step": metric["step"], "namespace": metric["namespace"]}
    return {"name": {"origin": USER, "name": metric["name"], "context": context}, "cumulative": True, **value}


def _output_name(tag: str) -> str:
    # Dataflow calls a step's main output out0; a tagged output keeps its tag.
    return "out0" if tag in (MAIN_OUTPUT, "") else tag
