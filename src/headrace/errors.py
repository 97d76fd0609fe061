"""Errors with Google's canonical status names; the api layer renders them in the envelope
{"error": {"code", "message", "status", "details"}}. Services raise them too: the names are
canonical codes, not HTTP."""

from __future__ import annotations

HTTP_CODES = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
}


class ApiError(Exception):
    """An error the client sees; raised by the api and service layers alike."""

    def __init__(self, status: str, message: str, details: list | None = None, code: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []
        self.code = code or HTTP_CODES[status]

    def envelope(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "status": self.status, "details": self.details}}



def invalid(message: str) -> ApiError:
    return ApiError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ApiError:
    return ApiError("NOT_FOUND", message)


def precondition(message: str) -> ApiError:
    return ApiError("FAILED_PRECONDITION", message)
