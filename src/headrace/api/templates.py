"""templates.create, templates.launch, templates.get (classic templates)."""

from headrace.api.call import Call


def create(call: Call) -> dict:
    return call.services.templates.create(call.project, call.location, call.body)


def launch(call: Call) -> dict:
    path = call.get("gcsPath") or call.get("dynamicTemplate.gcsPath")
    return call.services.templates.launch(call.project, call.location, path, call.body,
                                          validate_only=call.get("validateOnly", False))


def get(call: Call) -> dict:
    return call.services.templates.get(call.get("gcsPath"))


HANDLERS = {"templates.create": create, "templates.launch": launch, "templates.get": get}
