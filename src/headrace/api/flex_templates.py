"""flexTemplates.launch."""

from headrace.api.call import Call


def launch(call: Call) -> dict:
    return call.services.flex_templates.launch(call.project, call.location, call.body)


HANDLERS = {"flexTemplates.launch": launch}
