"""How busy the API is, for back-pressure on worker report intervals."""

from __future__ import annotations

import threading


class Load:
    def __init__(self, busy_at: int):
        self.busy_at = busy_at
        self.in_flight = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    @property
    def busy(self) -> bool:
        return self.in_flight >= self.busy_at
