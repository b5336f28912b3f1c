"""Leader election through the database: of N replicas sharing one database, exactly one runs the scheduled
day/night jobs; the others serve requests only.

The leader holds the ``leases`` row named ``scheduler`` (holder ``host:pid@start``, ``process_identity``;
``expires_at``) and renews it every ``ttl/3`` seconds. A replica takes the row over only when it has expired
(the leader was killed, hung or lost the database), with one conditional UPDATE, so two replicas can never
both believe they lead: the database decides. Works the same on SQLite (one host) and PostgreSQL (several hosts); replica clocks must
agree to well within the ttl (NTP).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service.db.models import Lease
from service.db.repositories import process_identity

log = logging.getLogger(__name__)

LEADER_LEASE = "scheduler"


def _now() -> datetime:
    return datetime.now(UTC)


class LeaderElector:
    """Campaign for, hold and give up the scheduler lease. ``on_change(True|False)`` runs on every change of
    this replica's leadership, in the heartbeat thread."""

    def __init__(
        self,
        db: Any,
        ttl_s: float = 30.0,
        name: str = LEADER_LEASE,
        identity: str | None = None,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("the leader lease ttl must be positive")
        self.db = db
        self.ttl = timedelta(seconds=ttl_s)
        self.name = name
        self.identity = identity or process_identity()
        self.on_change = on_change
        self.is_leader = False
        self._reported: bool | None = None  # the first heartbeat always logs which role this replica has
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def try_lead(self) -> bool:
        """Take or renew the lease if it is free, expired or ours; True when this replica holds it now."""
        now = _now()
        expires = now + self.ttl
        with self.db.session() as s:
            taken = s.execute(
                update(Lease)
                .where(Lease.name == self.name, or_(Lease.holder == self.identity, Lease.expires_at < now))
                .values(holder=self.identity, expires_at=expires)
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount == 1:
                return True
            if s.get(Lease, self.name) is not None:
                return False
        try:
            with self.db.session() as s:
                s.add(Lease(name=self.name, holder=self.identity, expires_at=expires))
        except IntegrityError:  # another replica inserted the row first
            return False
        return True

    def step(self) -> bool:
        """One heartbeat: campaign/renew, and report a change. A database error counts as not leading (a
        leader that cannot renew must stop scheduling before its lease runs out elsewhere)."""
        try:
            leading = self.try_lead()
        except SQLAlchemyError:
            log.warning("leader lease could not be renewed; not scheduling until it can", exc_info=True)
            leading = False
        changed = leading != self.is_leader
        self.is_leader = leading
        if leading != self._reported:
            self._reported = leading
            log.info(
                "scheduler %s: %s",
                "leader" if leading else "follower",
                f"this replica ({self.identity}) runs the scheduled jobs"
                if leading
                else f"another replica runs the scheduled jobs ({self.holder() or 'none yet'})",
            )
        if changed and self.on_change is not None:
            try:
                self.on_change(leading)
            except Exception:  # e.g. APScheduler could not start: retried at the next heartbeat
                log.exception("scheduler %s transition failed; retrying", "leader" if leading else "follower")
                self.is_leader = not leading
        return leading

    def holder(self) -> str | None:
        """The lease's current holder (None when there is no row or it has expired)."""
        try:
            with self.db.session() as s:
                lease = s.get(Lease, self.name)
                if lease is None:
                    return None
                expires = (
                    lease.expires_at if lease.expires_at.tzinfo else lease.expires_at.replace(tzinfo=UTC)
                )
                return lease.holder if expires > _now() else None
        except SQLAlchemyError:
            return None

    def status(self) -> dict[str, Any]:
        """For /readyz or an operator: whether this replica leads, and who does."""
        return {"leader": self.is_leader, "identity": self.identity, "holder": self.holder()}

    def start(self) -> None:
        self._stop.clear()
        self.step()
        self._thread = threading.Thread(target=self._loop, name="leader-lease", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        interval = self.ttl.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                self.step()
            except Exception:  # the heartbeat thread must outlive any one failure
                log.exception("leader heartbeat failed")

    def stop(self) -> None:
        """Stop campaigning and hand the lease back at once, so another replica takes over without waiting
        for it to expire."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl.total_seconds())
            self._thread = None
        was_leader = self.is_leader
        self.is_leader = False
        self._reported = None
        try:
            with self.db.session() as s:
                lease = s.get(Lease, self.name)
                if lease is not None and lease.holder == self.identity:
                    s.delete(lease)
        except SQLAlchemyError:
            log.warning("could not hand the leader lease back; it expires by itself", exc_info=True)
        if was_leader and self.on_change is not None:
            self.on_change(False)
