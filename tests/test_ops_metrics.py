"""``/metrics`` of a real started daemon: process and build info, counters instead of a pass-rate gauge, the
rustc check and queue wait histograms after a fix request, the last successful night read from the database
at start, and (slow) a real night counted with the gate's decision per task."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.api.app import create_app
from service.api.metrics import build_version
from service.app_services import Services
from service.db import migrate
from service.db.models import Run
from service.db.session import Database
from tests.helpers import AUTH, make_settings, wait_ready, wait_run
from tests.live_server import LiveServer

MOVED = 'fn main() { let s = String::from("a"); let t = s; println!("{} {}", s, t); }\n'
LAST_NIGHT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def named(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> dict[tuple, float]:
    return {labels: v for (n, labels), v in values.items() if n == name}


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[tuple[httpx.Client, Services]]:
    settings = make_settings(tmp_path_factory.mktemp("metrics"), tiny_model_dir)
    migrate.upgrade(settings.db_url)
    db = Database(settings.db_url)
    with db.session() as s:  # a night another replica finished before this one started
        s.add(Run(kind="night", status="succeeded", trigger="schedule", finished_at=LAST_NIGHT, summary={}))
    db.dispose()
    services = Services.build(settings)
    with LiveServer(create_app(services)) as server, httpx.Client(base_url=server.url, timeout=300) as client:
        wait_ready(client)
        yield client, services


def test_metrics_after_a_fix_request(live: tuple[httpx.Client, Services]) -> None:
    client, _ = live
    fixed = client.post("/v1/fix", json={"code": MOVED})
    assert fixed.status_code == 200
    # rustc's suggestions settle some fixes in the fast lane, which never waits in the model queue.
    model_jobs = 0 if {a["strategy"] for a in fixed.json()["attempts"]} <= {"suggestions"} else 1
    values = samples(client.get("/metrics").text)
    assert named(values, "process_cpu_seconds_total") and named(values, "process_resident_memory_bytes")
    assert named(values, "python_info")
    ((labels, value),) = named(values, "dreamfix_build_info").items()
    assert value == 1 and dict(labels)["version"] == build_version() and dict(labels)["python"]
    assert not named(values, "dreamfix_pass_rate")  # replaced by counters
    assert sum(named(values, "dreamfix_fixes_total").values()) == 1
    assert named(values, "dreamfix_queue_wait_seconds_count")[()] == model_jobs
    checks = named(values, "dreamfix_rustc_check_seconds_count")
    assert sum(checks.values()) >= 1 and set(checks) <= {(("cached", "false"),), (("cached", "true"),)}
    assert sum(named(values, "dreamfix_rustc_check_seconds_sum").values()) > 0
    assert named(values, "dreamfix_last_successful_night_timestamp_seconds")[()] == LAST_NIGHT.timestamp()


@pytest.mark.slow
def test_a_night_counts_its_run_and_gate_decisions(live: tuple[httpx.Client, Services]) -> None:
    client, _ = live
    run = wait_run(client, client.post("/admin/runs", json={"kind": "night"}, headers=AUTH).json()["run_id"])
    assert run["status"] == "succeeded", run
    versions = client.get("/admin/adapters", headers=AUTH).json()["items"]
    assert versions
    values = samples(client.get("/metrics").text)
    assert named(values, "dreamfix_runs_total")[(("kind", "night"), ("status", "succeeded"))] == 1
    decisions = named(values, "dreamfix_gate_decisions_total")
    expected = {
        (("decision", "promoted" if v["status"] == "active" else v["status"]), ("task", v["task"])): 1.0
        for v in versions
    }
    assert decisions == expected
    last = named(values, "dreamfix_last_successful_night_timestamp_seconds")[()]
    finished = datetime.fromisoformat(run["finished_at"]).timestamp()
    assert last > LAST_NIGHT.timestamp() and abs(last - finished) < 1
