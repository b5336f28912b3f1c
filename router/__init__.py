"""dreamfix router: rustc diagnostics → task key with a confidence, the served version of that task, and
the fallback to the base model."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from router.table import BASE_ROUTE, Route, resolve
from router.tasks import (
    DEFAULT_RULES,
    DiagnosticLike,
    RouteDecision,
    TaskRouter,
    TaskRule,
    error_diagnostics,
)


def make_route_fn(
    router: TaskRouter, versions: Mapping[str, int]
) -> Callable[[Iterable[DiagnosticLike]], Route]:
    """The ``route`` callable the fix loop takes: diagnostics → the task and its served version (from
    ``versions``, task → version, e.g. one pinned bank snapshot's), or base."""

    def route(diagnostics: Iterable[DiagnosticLike]) -> Route:
        return resolve(router.route(diagnostics), versions)

    return route


__all__ = [
    "BASE_ROUTE",
    "DEFAULT_RULES",
    "DiagnosticLike",
    "Route",
    "RouteDecision",
    "TaskRouter",
    "TaskRule",
    "error_diagnostics",
    "make_route_fn",
    "resolve",
]
