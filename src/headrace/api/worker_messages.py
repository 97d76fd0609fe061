"""workerMessages: POST .../WorkerMessages (and the project-level alias)."""

from headrace.api.call import Call


async def send(call: Call) -> dict:
    # Awaited on the event loop: the request joins a group commit without a thread of its own.
    return await call.services.workers.send(call.project, call.location, call.body)


HANDLERS = {"workerMessages": send}
