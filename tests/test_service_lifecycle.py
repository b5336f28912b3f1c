"""The daemon's life over restarts and replicas: a killed night is failed on restart with nothing promoted;
replicas sharing PostgreSQL pick up a promotion; the scheduler's jobs persist in SQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from service.api.app import create_app
from service.app_services import Services
from service.db.session import Database
from service.scheduler import DreamScheduler
from service.settings import SchedulerSettings
from tests.helpers import AUTH, TOKEN, install_version, make_settings, short_night_env, wait_ready
from tests.live_server import LiveServer, free_port


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port)],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.mark.slow
def test_a_killed_night_is_marked_failed_on_restart_and_promotes_nothing(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    # seed steps: long enough to be killed in the middle
    env = {**os.environ, **short_night_env(tmp_path / "data", tiny_model_dir, TOKEN, seed_steps=400)}
    port = free_port()
    log = tmp_path / "server.log"
    server = _serve(env, port, log)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and server.poll() is None, log.read_text()
                time.sleep(0.2)
            run_id = client.post("/admin/runs", json={"kind": "night"}, headers=AUTH).json()["run_id"]
            while "LoRA seed" not in client.get(f"/admin/runs/{run_id}", headers=AUTH).json()["log"]:
                assert time.monotonic() < deadline + 300, log.read_text()
                time.sleep(0.2)
            os.killpg(server.pid, signal.SIGKILL)  # mid-training: no clean shutdown at all
            server.wait(timeout=30)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    db = Database(f"sqlite:///{tmp_path / 'data' / 'dreamfix.db'}")
    with db.session() as s:
        assert s.execute(text("SELECT status FROM runs WHERE id = :i"), {"i": run_id}).scalar() == "running"
    db.dispose()

    port = free_port()
    server = _serve(env, port, log)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    run = client.get(f"/admin/runs/{run_id}", headers=AUTH).json()
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and server.poll() is None, log.read_text()
                    time.sleep(0.2)
            assert run["status"] == "failed" and "abandoned" in run["error"]
            adapters = client.get("/admin/adapters", headers=AUTH).json()
            assert adapters["items"] == [] and adapters["active"] == {}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.postgres
def test_replicas_sharing_postgres_pick_up_a_promotion(
    postgres_url: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    db_url = postgres_url
    replicas = []
    for i in range(2):
        settings = make_settings(tmp_path / f"r{i}", tiny_model_dir, database_url=db_url)
        services = Services.build(settings, migrate_db=False)
        services.sync_interval_s = 0.2
        replicas.append(services)
    with (
        LiveServer(create_app(replicas[0])) as a,
        LiveServer(create_app(replicas[1])) as b,
        httpx.Client(base_url=a.url, timeout=60) as ca,
        httpx.Client(base_url=b.url, timeout=60) as cb,
    ):
        wait_ready(ca)
        wait_ready(cb)
        task, version = install_version(db_url, tmp_path)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(
            r.serving.active_versions() == {task: version} for r in replicas
        ):
            time.sleep(0.1)
        assert [r.serving.active_versions() for r in replicas] == [{task: version}] * 2
        # A rollback through replica A reaches replica B too.
        assert ca.post(f"/admin/adapters/{task}/rollback", headers=AUTH, json={}).status_code == 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and replicas[1].serving.active_versions():
            time.sleep(0.1)
        assert replicas[1].serving.active_versions() == {}
        assert cb.get("/readyz").json()["route_epoch"] == ca.get("/readyz").json()["route_epoch"]


class _Recorder:
    """A stand-in job runner that records what the scheduler fired."""

    def __init__(self) -> None:
        self.fired: list[tuple[str, str]] = []

    def trigger(self, kind: str, trigger: str) -> int:
        self.fired.append((kind, trigger))
        return len(self.fired)


def test_scheduler_jobs_persist_in_sql_across_restarts(db_url: str) -> None:
    settings = SchedulerSettings(day_cron="0 9 * * *", night_cron="30 2 * * *")
    first = DreamScheduler(db_url, settings, _Recorder())
    first.start()
    runs = first.next_runs()
    first.stop()
    assert set(runs) == {"dreamfix-day", "dreamfix-night"}
    assert runs["dreamfix-night"] and "02:30:00" in runs["dreamfix-night"]
    db = Database(db_url)
    with db.session() as s:
        ids = set(s.execute(text("SELECT id FROM apscheduler_jobs")).scalars())
    db.dispose()
    assert ids == {"dreamfix-day", "dreamfix-night"}
    recorder = _Recorder()
    second = DreamScheduler(db_url, settings, recorder)
    second.start()
    try:
        second.scheduler.get_job("dreamfix-night").modify(next_run_time=time_now())  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while not recorder.fired and time.monotonic() < deadline:
            time.sleep(0.05)
        assert recorder.fired == [("night", "schedule")]
    finally:
        second.stop()


def time_now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)
