"""jobs.messages.list."""

from headrace.api.call import Call


def list_(call: Call) -> dict:
    return call.services.messages.list(call.project, call.location, call["jobId"], call.params)


HANDLERS = {"jobs.messages.list": list_}
