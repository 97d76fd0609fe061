"""Opaque page tokens: the position of the last row, bound to the request's other parameters.

A token reused with different parameters (another filter, another job) is refused rather
than silently returning a wrong page.
"""

from __future__ import annotations

import base64
import hashlib

import orjson

from headrace.errors import invalid


def _fingerprint(params: dict) -> str:
    return hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def encode(position, params: dict) -> str:
    raw = orjson.dumps({"p": position, "q": _fingerprint(params)})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str | None, params: dict):
    """The position stored in `token`, or None for the first page."""
    if not token:
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position, fingerprint = data["p"], data["q"]
    except (ValueError, KeyError, TypeError):
        raise invalid(f"The page token {token[:64]!r} is not valid.") from None
    if fingerprint != _fingerprint(params):
        raise invalid("The page token was issued for a request with different parameters; "
                      "repeat the request with the same parameters, or drop pageToken.")
    return position


def size(requested: int | None, default: int, cap: int) -> int:
    if requested is not None and requested < 0:
        raise invalid(f"pageSize must not be negative, got {requested}.")
    return min(requested or default, cap)
