"""Routes: the task a problem's diagnostics go to and the version of it that is served.

The router speaks task names and versions only. Which row of the Share bank a served version sits at is the
learner's business (``learner.share.bank.BankSnapshot.rows_for`` maps these keys to rows). The versions come
from one pinned bank snapshot per fix loop, so a request's routes never mix two publications. A task with no
served version (never trained, rolled back, below its eval bar) resolves to the base model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from router.tasks import RouteDecision


@dataclass(frozen=True)
class Route:
    """What one generate row runs with: ``version`` None means the base model (``task`` then says why)."""

    task: str | None
    version: int | None

    @property
    def key(self) -> tuple[str, int] | None:
        """The (task, version) the model serves this row with; None: the base model."""
        if self.task is None or self.version is None:
            return None
        return (self.task, self.version)


BASE_ROUTE = Route(None, None)


def resolve(decision: RouteDecision, versions: Mapping[str, int]) -> Route:
    """The route of a router decision over the served ``versions`` (task → version)."""
    if decision.task is None:
        return BASE_ROUTE
    return Route(decision.task, versions.get(decision.task))
