"""sql.validate (declared in the discovery overlay: newer documents dropped it)."""

from headrace.api.call import Call
from headrace.service import sql


def validate(call: Call) -> dict:
    return sql.validate(call.get("query"))


HANDLERS = {"sql.validate": validate}
