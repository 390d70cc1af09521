"""Faults a test asks for: error statuses, slow answers, connections dropped mid-response."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

KINDS = ("slow", "drop", "reset")


@dataclass
class Fault:
    """One injected fault; see ``PineconeServer.inject``. ``hits`` counts the requests it hit."""

    kind: int | str  # an HTTP status (429, 500, 503, ...), "slow", "drop" or "reset"
    times: int | None = 1
    path_contains: str | None = None
    method: str | None = None
    retry_after: float | None = None
    delay: float = 0.5
    fraction: float | None = None
    seed: int = 0
    hits: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.kind, int) and 400 <= self.kind <= 599) and self.kind not in KINDS:
            raise ValueError(f"fault kind must be an HTTP error status or one of {KINDS}, not {self.kind!r}")
        if self.fraction is not None and not 0 <= self.fraction <= 1:
            raise ValueError("fraction must be within 0..1")
        self._rng = random.Random(self.seed)

    @property
    def spent(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def wants(self, method: str, path: str) -> bool:
        if self.spent or (self.method and self.method.upper() != method):
            return False
        if self.path_contains and self.path_contains not in path:
            return False
        return self.fraction is None or self._rng.random() < self.fraction


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The first armed fault that matches this request, counted as hit (faults fire in the order added)."""
        with self._lock:
            for fault in self._faults:
                if fault.wants(method, path):
                    fault.hits += 1
                    return fault
        return None
