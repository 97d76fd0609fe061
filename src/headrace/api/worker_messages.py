"""worker_messages: handlers to come."""

HANDLERS: dict = {}
