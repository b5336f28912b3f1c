"""Per-row task routing for the duration of one generate/forward call.

The runtime sets which task each batch row belongs to (-1 = base model) and pins one snapshot of the
coefficient bank; every routed layer reads both from here. Pinning the snapshot for the whole call is what
makes hot-swap atomic: a forward sees the old coefficients or the new ones, never a mix across layers.
Thread-local, so concurrent calls in different threads do not see each other's routes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


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
