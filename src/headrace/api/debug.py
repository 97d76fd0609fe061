"""debug: handlers to come."""

HANDLERS: dict = {}
