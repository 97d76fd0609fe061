"""work_items: handlers to come."""

HANDLERS: dict = {}
