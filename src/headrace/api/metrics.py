"""metrics: handlers to come."""

HANDLERS: dict = {}
