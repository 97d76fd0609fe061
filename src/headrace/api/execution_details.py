"""execution_details: handlers to come."""

HANDLERS: dict = {}
