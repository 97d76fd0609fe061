"""jobs.getMetrics."""

from headrace.api.call import Call
from headrace.api.codec import KeepEmpty


def get_metrics(call: Call) -> dict:
    result = call.services.metrics.get(call.project, call.location, call["jobId"], call.get("startTime"))
    # Clients read `metrics` as a list even when a job has none yet.
    return result | {"metrics": KeepEmpty(result["metrics"])}


HANDLERS = {"jobs.getMetrics": get_metrics}
