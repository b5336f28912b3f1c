"""Issue 17, the check lane: /v1/check runs in its own bounded queue (429 + Retry-After beyond it), its wall
limit counts the time spent waiting, /healthz and /readyz answer at once while every check slot is busy, and
one client address holds at most its share of the lane while other clients' checks still get in. Clients
come from distinct loopback addresses (127.0.0.x), so the server sees them as distinct clients."""

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


def _client_from(address: str, url: str) -> httpx.Client:
    """An HTTP client whose connections come from ``address`` (any 127.0.0.0/8 address is this host)."""
    return httpx.Client(base_url=url, timeout=60, transport=httpx.HTTPTransport(local_address=address))


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
    url = str(client.base_url)
    # A warm lane (four quick checks measured): admission plans the next check on them, so the second slow
    # check below is accepted and waits — a cold lane plans each job ahead as 4 × its 1 s guess and would
    # refuse it up front against the 2 s limit.
    for n in range(4):
        assert client.post("/v1/check", json={"code": f"fn main() {{ let _ = {n}; }}\n"}).status_code == 200
    with (
        ThreadPoolExecutor(4) as pool,
        _client_from("127.0.0.2", url) as first,
        _client_from("127.0.0.3", url) as second,
    ):
        running = pool.submit(first.post, "/v1/check", json={"code": _slow_test_program(1), "mode": "test"})
        deadline = time.monotonic() + 10
        while services.check_queue.depth < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        waiting = pool.submit(second.post, "/v1/check", json={"code": _slow_test_program(2), "mode": "test"})
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


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[tuple[str, Services]]:
    """A lane of two workers and two waiting places: a client's share is (2 + 2) // 2 = 2 checks."""
    settings = make_settings(
        tmp_path_factory.mktemp("share"),
        tiny_model_dir,
        limits={
            "max_body_bytes": 64 * 1024,
            "max_code_bytes": 16 * 1024,
            "check_workers": 2,
            "check_queue_size": 2,
            "check_timeout_s": 30.0,
        },
    )
    services = Services.build(settings)
    with LiveServer(create_app(services)) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        wait_ready(client)
        yield server.url, services


def test_one_client_gets_its_share_of_the_check_lane_and_another_client_still_gets_in(
    shared: tuple[str, Services],
) -> None:
    url, services = shared
    lane = services.check_queue
    assert lane is not None
    with (
        ThreadPoolExecutor(4) as pool,
        _client_from("127.0.0.2", url) as greedy,
        _client_from("127.0.0.3", url) as polite,
    ):
        mine = [
            pool.submit(greedy.post, "/v1/check", json={"code": _slow_test_program(10 + i), "mode": "test"})
            for i in range(2)
        ]
        deadline = time.monotonic() + 10
        while lane.depth < 2:
            assert time.monotonic() < deadline, "the greedy client's checks never reached the lane"
            time.sleep(0.01)
        # The lane still has room (two waiting places), but this client holds its share: 429 + Retry-After.
        refused = greedy.post("/v1/check", json={"code": _slow_test_program(12), "mode": "test"})
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["Retry-After"]) <= 120
        assert "share" in refused.json()["error"] and "127.0.0.2" not in refused.json()["error"]
        assert lane.depth == 2 and lane.owner_jobs("127.0.0.2") == 2  # the refusal left nothing behind
        # Another client's check is admitted and answered (it waits for a worker, well within its limit).
        other = polite.post("/v1/check", json={"code": f"// polite {time.time_ns()}\nfn main() {{}}\n"})
        assert other.status_code == 200, other.text
        assert other.json()["ok"]
        assert [f.result().status_code for f in mine] == [200, 200]
    # Once its checks are done, the client's share is free again.
    assert lane.owner_jobs("127.0.0.2") == 0
    with _client_from("127.0.0.2", url) as greedy:
        ok = greedy.post("/v1/check", json={"code": "fn main() {}\n"})
    assert ok.status_code == 200 and ok.json()["ok"]


def test_loading_the_model_freezes_the_long_lived_objects_out_of_the_collector(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Full garbage collections walking the loaded model's objects stalled the event loop for ~300 ms under
    a check flood (bench_faults' /readyz p99); once the model is loaded, the daemon freezes what exists."""
    import gc

    services = Services.build(make_settings(tmp_path, tiny_model_dir))
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        services._load_model()
        assert services.serving.model_ready
        assert gc.get_freeze_count() > 10_000  # the model, tokenizer and libraries, not a handful
        model = services.serving.runtime.model
        assert gc.is_tracked(model) and not any(model is o for o in gc.get_objects(generation=2))
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
