"""sql.validate (declared in the discovery overlay): 501 UNIMPLEMENTED until the SQL issue lands."""

HANDLERS: dict = {}
