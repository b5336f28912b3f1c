"""Several replicas on one database: exactly one is the scheduler leader (the ``leases`` row), the others
serve; when the leader dies (kill -9) another takes over within the lease time."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from service.db.models import Lease
from service.db.repositories import process_identity
from service.db.session import Database
from service.leader import LEADER_LEASE, LeaderElector
from service.scheduler import DreamScheduler
from service.settings import SchedulerSettings
from tests.helpers import TOKEN
from tests.live_server import free_port


def _holder(db: Database) -> str | None:
    with db.session() as s:
        lease = s.get(Lease, LEADER_LEASE)
        return lease.holder if lease is not None else None


def test_one_of_two_electors_leads_and_the_other_takes_over_an_expired_lease(db_url: str) -> None:
    db = Database(db_url)
    changes: list[tuple[str, bool]] = []
    a = LeaderElector(db, ttl_s=60, identity="host-a:1", on_change=lambda v: changes.append(("a", v)))
    b = LeaderElector(db, ttl_s=60, identity="host-b:2", on_change=lambda v: changes.append(("b", v)))
    try:
        assert a.step() is True
        assert b.step() is False  # the lease is a's and alive
        assert a.step() is True  # renewing its own lease
        assert _holder(db) == "host-a:1" and b.status()["holder"] == "host-a:1"
        with db.session() as s:  # a stops renewing (killed, hung): its lease runs out
            lease = s.get(Lease, LEADER_LEASE)
            assert lease is not None
            lease.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        assert b.status()["holder"] is None
        assert b.step() is True
        assert a.step() is False  # a comes back: it follows and stops scheduling
        assert _holder(db) == "host-b:2"
        assert changes == [("a", True), ("b", True), ("a", False)]
        b.stop()  # a graceful stop hands the lease back at once
        assert _holder(db) is None and a.step() is True
    finally:
        db.dispose()


class _Recorder:
    def trigger(self, kind: str, trigger: str) -> int:
        return 0


def test_only_the_leaders_scheduler_runs_and_a_follower_starts_it_on_takeover(db_url: str) -> None:
    db = Database(db_url)
    settings = SchedulerSettings(day_cron="0 9 * * *", night_cron="30 2 * * *")
    first = DreamScheduler(db_url, settings, _Recorder(), LeaderElector(db, ttl_s=60, identity="h:1"))
    second = DreamScheduler(db_url, settings, _Recorder(), LeaderElector(db, ttl_s=60, identity="h:2"))
    try:
        first.start()
        second.start()
        assert first.running and not second.running
        assert set(first.next_runs()) == {"dreamfix-day", "dreamfix-night"} and second.next_runs() == {}
        assert first.leadership() == {"scheduler": "leader", "holder": "h:1"}
        assert second.leadership() == {"scheduler": "follower", "holder": "h:1"}
        first.stop()  # hands the lease back
        assert second.elector is not None and second.elector.step() is True
        assert second.running and set(second.next_runs()) == {"dreamfix-day", "dreamfix-night"}
    finally:
        first.stop()
        second.stop()
        db.dispose()


def test_a_failed_start_of_the_leaders_scheduler_is_retried_at_the_next_heartbeat(db_url: str) -> None:
    db = Database(db_url)
    calls: list[bool] = []

    def start(leading: bool) -> None:
        calls.append(leading)
        if len(calls) == 1:
            raise RuntimeError("job store unreachable")

    elector = LeaderElector(db, ttl_s=60, identity="h:1", on_change=start)
    try:
        assert elector.step() is True and elector.is_leader is False  # holds the lease, not yet scheduling
        assert elector.step() is True and elector.is_leader is True
        assert calls == [True, True]
    finally:
        elector.stop()
        db.dispose()


def _replica(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port)],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _leader_gauge(port: int) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except httpx.TransportError:
        return None
    match = re.search(r"^dreamfix_scheduler_leader (\S+)$", text, re.M)
    return float(match[1]) if match else None


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.slow
@pytest.mark.postgres
def test_two_replica_processes_on_postgres_elect_one_leader_and_fail_over_after_kill_9(
    postgres_url: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    ttl = 3.0
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    logs: list[Path] = []
    for i in range(2):
        env = {
            **os.environ,
            "DREAMFIX_DATABASE_URL": postgres_url,
            "DREAMFIX_DATA_DIR": str(tmp_path / f"replica{i}"),
            "DREAMFIX_MODEL": str(tiny_model_dir),
            "DREAMFIX_ADMIN_TOKEN": TOKEN,
            "DREAMFIX_SCHEDULER__ENABLED": "true",
            "DREAMFIX_SCHEDULER__LEADER_TTL_S": str(ttl),
        }
        ports.append(free_port())
        logs.append(tmp_path / f"replica{i}.log")
        procs.append(_replica(env, ports[-1], logs[-1]))
    db = Database(postgres_url)
    try:
        for port in ports:
            _wait(lambda p=port: _leader_gauge(p) is not None, 120, f"replica on :{port} to answer /metrics")
        holder = _wait(lambda: _holder(db), 30, "a leader")
        by_identity = {process_identity(p.pid): i for i, p in enumerate(procs)}
        assert holder in by_identity, (holder, by_identity)
        leader = by_identity[holder]
        follower = 1 - leader
        time.sleep(ttl)  # several heartbeats: the leadership is stable, and still exactly one
        assert _holder(db) == holder
        assert [_leader_gauge(p) for p in ports] == [1.0 if i == leader else 0.0 for i in range(2)]
        ready = [httpx.get(f"http://127.0.0.1:{p}/readyz", timeout=10).json() for p in ports]
        assert [r["scheduler"] for r in ready] == ["leader" if i == leader else "follower" for i in range(2)]
        assert {r["scheduler_holder"] for r in ready} == {holder}
        os.killpg(procs[leader].pid, signal.SIGKILL)  # no clean shutdown: the lease is NOT handed back
        procs[leader].wait(timeout=30)
        killed_at = time.monotonic()
        successor = process_identity(procs[follower].pid)
        new = _wait(lambda: _holder(db) == successor, 3 * ttl, "the takeover")
        took = time.monotonic() - killed_at
        assert new and took <= ttl + ttl / 3 + 2.0, took  # the lease, one heartbeat, a loaded host's slack
        _wait(lambda: _leader_gauge(ports[follower]) == 1.0, 10, "the new leader's gauge")
        text = logs[follower].read_text()
        assert "scheduler follower" in text and "scheduler leader" in text, text
        assert "scheduled dreamfix-night" in text.split("scheduler leader", 1)[1], text
        for i, path in enumerate(logs):
            for line in path.read_text().splitlines():
                if "scheduler leader" in line or "scheduler follower" in line:
                    print(f"replica{i} (pid {procs[i].pid}): {line.strip()}")
        print(f"leader {holder} killed -9; {successor} took over in {took:.1f}s (ttl {ttl}s)")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
        db.dispose()
