"""workerMessages: POST .../WorkerMessages (and the project-level alias)."""

from headrace.api.call import Call


def send(call: Call) -> dict:
    return call.services.workers.send(call.project, call.location, call.body)


HANDLERS = {"workerMessages": send}
