"""jobs.snapshot, jobs.snapshots.list, snapshots.get / list / delete and deleteSnapshots."""

from headrace.api.call import Call


def snapshot(call: Call) -> dict:
    return call.services.snapshots.create(call.project, call.location, call["jobId"], call.body)


def get(call: Call) -> dict:
    return call.services.snapshots.get(call.project, call.location, call["snapshotId"])


def list_(call: Call) -> dict:
    return call.services.snapshots.list(call.project, call.location, call.get("jobId"))


def list_for_job(call: Call) -> dict:
    return call.services.snapshots.list_for_job(call.project, call.location, call["jobId"])


def delete(call: Call) -> dict:
    # The project-level DELETE projects/{p}/snapshots names the snapshot in the query.
    return call.services.snapshots.delete(call.project, call.location, call.get("snapshotId"))


HANDLERS = {
    "jobs.snapshot": snapshot,
    "jobs.snapshots.list": list_for_job,
    "snapshots.get": get,
    "snapshots.list": list_,
    "snapshots.delete": delete,
    "deleteSnapshots": delete,
}
