"""snapshots: handlers to come."""

HANDLERS: dict = {}
