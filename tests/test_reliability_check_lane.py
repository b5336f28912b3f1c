"""Issue 17, the check lane: /v1/check runs in its own bounded queue (429 + Retry-After beyond it), its wall
limit counts the time spent waiting, and /healthz and /readyz answer at once while every check slot is busy."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from service.api.app import create_app
from service.app_services import Services
from tests.helpers import make_settings, wait_ready
from tests.live_server import LiveServer


def _slow_test_program(n: int) -> str:
    """A test-mode program whose one test sleeps ~3 s (a distinct source each time: no cached verdict)."""
    return (
        f"// slow check {n} {time.time_ns()}\n"
        "pub fn nap() { std::thread::sleep(std::time::Duration::from_millis(3000)); }\n"
        "#[cfg(test)]\nmod tests {\n    #[test]\n    fn naps() { super::nap(); }\n}\n"
    )


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[tuple[httpx.Client, Services]]:
    settings = make_settings(
        tmp_path_factory.mktemp("chk"),
        tiny_model_dir,
        limits={
            "max_body_bytes": 64 * 1024,
            "max_code_bytes": 16 * 1024,
            "check_workers": 1,
            "check_queue_size": 1,
            "check_timeout_s": 2.0,
        },
    )
    services = Services.build(settings)
    with LiveServer(create_app(services)) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        wait_ready(client)
        yield client, services


def test_a_full_check_lane_refuses_with_429_and_health_still_answers(
    live: tuple[httpx.Client, Services],
) -> None:
    client, services = live
    assert services.check_queue is not None
    with ThreadPoolExecutor(4) as pool, httpx.Client(base_url=str(client.base_url), timeout=60) as other:
        running = pool.submit(other.post, "/v1/check", json={"code": _slow_test_program(1), "mode": "test"})
        deadline = time.monotonic() + 10
        while services.check_queue.depth < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        waiting = pool.submit(other.post, "/v1/check", json={"code": _slow_test_program(2), "mode": "test"})
        while services.check_queue.depth < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        refused = client.post("/v1/check", json={"code": _slow_test_program(3), "mode": "test"})
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["Retry-After"]) <= 120
        assert "queue is full" in refused.json()["error"]
        took = []
        for _ in range(10):
            start = time.monotonic()
            assert client.get("/readyz").status_code == 200
            assert client.get("/healthz").status_code == 200
            took.append(time.monotonic() - start)
        assert statistics.median(took) < 0.2 and max(took) < 1.0, took
        # The wall limit counts waiting: the queued check is answered 504 at ~2 s, not after the running one.
        started = time.monotonic()
        late = waiting.result()
        assert late.status_code == 504, late.text
        assert "waiting included" in late.json()["error"]
        assert time.monotonic() - started < 3.0
        assert running.result().status_code in (200, 504)
    deadline = time.monotonic() + 15
    while services.check_queue.depth:
        assert time.monotonic() < deadline, "the lane did not drain"
        time.sleep(0.05)
    ok = client.post("/v1/check", json={"code": "fn main() {}\n"})
    assert ok.status_code == 200 and ok.json()["ok"]
