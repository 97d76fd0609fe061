"""jobs.workItems.lease and jobs.workItems.reportStatus, regional and project-level alike.

`projects/-/locations/-/jobs/-/workItems:lease` leases from any job (AIP-159 wildcards)."""

from headrace.api.call import Call


def lease(call: Call) -> dict:
    return call.services.work_items.lease(call.project, call.location, call["jobId"], call.body)


def report_status(call: Call) -> dict:
    return call.services.work_items.report_status(call.project, call.location, call["jobId"], call.body)


HANDLERS = {
    "jobs.workItems.lease": lease,
    "jobs.workItems.reportStatus": report_status,
}
