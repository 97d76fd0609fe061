"""jobs.debug.getConfig, sendCapture, getWorkerStacktraces."""

from headrace.api.call import Call


def get_config(call: Call) -> dict:
    return call.services.debug.get_config(call.project, call.location, call["jobId"], call.body)


def send_capture(call: Call) -> dict:
    return call.services.debug.send_capture(call.project, call.location, call["jobId"], call.body)


def get_worker_stacktraces(call: Call) -> dict:
    return call.services.debug.stacktraces(call.project, call.location, call["jobId"], call.body)


HANDLERS = {
    "jobs.debug.getConfig": get_config,
    "jobs.debug.sendCapture": send_capture,
    "jobs.debug.getWorkerStacktraces": get_worker_stacktraces,
}
