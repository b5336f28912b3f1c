"""The route table: which coefficient version of each task is live, and at which row of the bank it sits.

The night job publishes a whole new mapping at once (after the bank has been loaded with the new rows), so a
request resolves against either the old table or the new one, never a half-updated mix. A task that has no
active version — never trained, rolled back, or below its eval bar — resolves to the base model (row -1).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from router.tasks import RouteDecision

BASE_ROW = -1


@dataclass(frozen=True)
class ActiveVersion:
    """A published coefficient version of one task and its row index in the runtime's coefficient bank."""

    version: int
    row: int

    def __post_init__(self) -> None:
        if self.version < 0:
            raise ValueError(f"version must be >= 0, not {self.version}")
        if self.row < 0:
            raise ValueError(f"bank row must be >= 0, not {self.row} (base is not a published version)")


@dataclass(frozen=True)
class Route:
    """What one generate row runs with: ``row`` = -1 means the base model (task/version then say why)."""

    task: str | None
    version: int | None
    row: int


BASE_ROUTE = Route(None, None, BASE_ROW)


class RouteTable:
    """Thread-safe task → active version mapping, replaced atomically as a whole by :meth:`publish`."""

    def __init__(self, mapping: Mapping[str, ActiveVersion] | None = None) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._mapping: Mapping[str, ActiveVersion] = MappingProxyType({})
        if mapping:
            self.publish(mapping)

    def publish(self, mapping: Mapping[str, ActiveVersion]) -> int:
        """Replace the whole mapping; returns the new generation number (increases by one per publish)."""
        frozen: dict[str, ActiveVersion] = {}
        rows: dict[int, str] = {}
        for task, active in mapping.items():
            if not isinstance(active, ActiveVersion):
                raise TypeError(f"task {task!r}: expected ActiveVersion, got {type(active).__name__}")
            if active.row in rows:
                raise ValueError(f"tasks {rows[active.row]!r} and {task!r} both claim bank row {active.row}")
            rows[active.row] = task
            frozen[task] = active
        with self._lock:
            self._mapping = MappingProxyType(frozen)
            self._generation += 1
            return self._generation

    @property
    def generation(self) -> int:
        with self._lock:
            return self._generation

    def snapshot(self) -> Mapping[str, ActiveVersion]:
        """The current mapping (read-only); later publishes do not change the returned object."""
        with self._lock:
            return self._mapping

    def resolve(self, decision: RouteDecision) -> Route:
        if decision.task is None:
            return BASE_ROUTE
        active = self.snapshot().get(decision.task)
        if active is None:
            return Route(decision.task, None, BASE_ROW)
        return Route(decision.task, active.version, active.row)
