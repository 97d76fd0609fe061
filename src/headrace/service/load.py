"""How busy the API is, for back-pressure on worker report intervals."""

from __future__ import annotations


class Load:
    """Requests in flight. Only the API's event loop thread counts them, so no lock; other
    threads only read the number."""

    def __init__(self, busy_at: int):
        self.busy_at = busy_at
        self.in_flight = 0

    def enter(self) -> None:
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1

    @property
    def busy(self) -> bool:
        return self.in_flight >= self.busy_at
