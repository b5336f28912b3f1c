"""Per-row task routing for the duration of one generate/forward call.

Callers outside the learner name a row's coefficients by a :data:`TaskKey` (task, version); the runtime
maps the keys to bank rows through the pinned snapshot (``BankSnapshot.rows_for``), sets which row each
batch row reads (-1 = base model) and pins that snapshot; every routed layer reads both from here. Pinning the snapshot for the whole call is what
makes hot-swap atomic: a forward sees the old coefficients or the new ones, never a mix across layers.
Thread-local, so concurrent calls in different threads do not see each other's routes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: A served coefficient version, as the router and the agent name it: (task, version). None: the base model.
TaskKey = tuple[str, int]


@dataclass(frozen=True)
class RouteContext:
    row_tasks: Any  # torch.LongTensor of shape (batch,), -1 = base
    snapshot: Any  # the bank snapshot object every layer must read in this call


_local = threading.local()


def current() -> RouteContext | None:
    return getattr(_local, "ctx", None)


@contextmanager
def routed(row_tasks: Any, snapshot: Any) -> Iterator[RouteContext]:
    previous = current()
    ctx = RouteContext(row_tasks=row_tasks, snapshot=snapshot)
    _local.ctx = ctx
    try:
        yield ctx
    finally:
        _local.ctx = previous
