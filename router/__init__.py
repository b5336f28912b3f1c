"""dreamfix router: rustc diagnostics → task key with a confidence, the route table (task → active
coefficient version), and the fallback to the base model."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from router.table import BASE_ROUTE, BASE_ROW, ActiveVersion, Route, RouteTable
from router.tasks import (
    DEFAULT_RULES,
    DiagnosticLike,
    RouteDecision,
    TaskRouter,
    TaskRule,
    error_diagnostics,
)


def make_route_fn(router: TaskRouter, table: RouteTable) -> Callable[[Iterable[DiagnosticLike]], Route]:
    """The ``route`` callable the fix loop takes: diagnostics → the task's live version, or base."""

    def route(diagnostics: Iterable[DiagnosticLike]) -> Route:
        return table.resolve(router.route(diagnostics))

    return route


__all__ = [
    "BASE_ROUTE",
    "BASE_ROW",
    "DEFAULT_RULES",
    "ActiveVersion",
    "DiagnosticLike",
    "Route",
    "RouteDecision",
    "RouteTable",
    "TaskRouter",
    "TaskRule",
    "error_diagnostics",
    "make_route_fn",
]
