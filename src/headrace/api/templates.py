"""templates.create, launch, get: the templates issue implements these; until then they
answer 501 UNIMPLEMENTED through the router's default."""

HANDLERS: dict = {}
