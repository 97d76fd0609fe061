"""jobs.create, get, list, aggregated, update."""

from headrace.api.call import Call


def create(call: Call) -> dict:
    return call.services.jobs.create(call.project, call.location, call.body,
                                     replace_job_id=call.get("replaceJobId"), view_name=call.get("view"))


def get(call: Call) -> dict:
    return call.services.jobs.get(call.project, call.location, call["jobId"], call.get("view"))


def list_(call: Call) -> dict:
    return call.services.jobs.list(call.project, call.location, call.params)


def aggregated(call: Call) -> dict:
    # Across every location of the project, unless the caller names one.
    return call.services.jobs.list(call.project, call.get("location"), call.params)


def update(call: Call) -> dict:
    return call.services.jobs.update(call.project, call.location, call["jobId"], call.body,
                                     call.get("updateMask"))


HANDLERS = {
    "jobs.create": create,
    "jobs.get": get,
    "jobs.list": list_,
    "jobs.aggregated": aggregated,
    "jobs.update": update,
}
