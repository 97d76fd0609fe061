"""flexTemplates.launch: 501 UNIMPLEMENTED until the templates issue lands."""

HANDLERS: dict = {}
