"""The daemon over real HTTP: a uvicorn server on a local port, httpx clients, the tiny model, the jailed
sandbox, SQLite — and PostgreSQL for the multi-replica pick-up."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from agent.koans import train_koans
from agent.sandbox import Sandbox, SandboxConfig
from router import TaskRouter
from service.api.app import create_app
from service.app_services import Services
from tests.helpers import AUTH, TOKEN, make_settings, wait_ready, wait_run
from tests.live_server import LiveServer

MOVED = 'fn main() { let s = String::from("hi"); let t = s; println!("{} {}", s, t); }\n'


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[tuple[httpx.Client, Services]]:
    settings = make_settings(tmp_path_factory.mktemp("svc"), tiny_model_dir)
    services = Services.build(settings)
    services.sync_interval_s = 0.5
    with LiveServer(create_app(services)) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        wait_ready(client)
        yield client, services


def test_health_ready_and_openapi(live: tuple[httpx.Client, Services]) -> None:
    client, _ = live
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] and ready["database"] == "ok" and ready["model"] == "loaded"
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/fix", "/v1/check", "/admin/runs", "/admin/adapters"} <= set(paths)


def test_check_reports_rustc_diagnostics(live: tuple[httpx.Client, Services]) -> None:
    client, _ = live
    body = client.post("/v1/check", json={"code": MOVED}).json()
    assert body["ok"] is False and body["verdict"] == "compile_error"
    assert body["error_codes"] == ["E0382"]
    assert "borrow of moved value" in body["diagnostics"][0]["message"]


def test_fix_round_trip_is_persisted_per_attempt(live: tuple[httpx.Client, Services]) -> None:
    client, _ = live
    r = client.post("/v1/fix", json={"code": MOVED, "mode": "bin", "edition": "2021"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {"fixed", "code", "diff", "attempts", "error_codes", "route", "episode_id", "verified"} <= set(
        body
    )
    assert body["error_codes"] == ["E0382"]
    assert body["verified"] is True
    assert body["attempts"], "every request makes at least one verified attempt"
    assert set(body["route"]) >= {"task", "version"}
    episode = client.get(f"/admin/episodes/{body['episode_id']}", headers=AUTH).json()
    assert episode["origin"] == "client" and episode["source"] == MOVED
    assert [a["attempt"] for a in episode["attempts"]] == [a["attempt"] for a in body["attempts"]]
    page = client.get("/admin/episodes", params={"origin": "client", "limit": 1}, headers=AUTH).json()
    assert page["total"] >= 1 and len(page["items"]) == 1


def test_client_diagnostics_route_code_the_sandbox_cannot_build(live: tuple[httpx.Client, Services]) -> None:
    client, _ = live
    code = 'use serde::Serialize;\n#[derive(Serialize)]\nstruct P { x: i32 }\nfn main() { let p = P { x: 1 }; let q = p; println!("{}", p.x); }\n'
    rendered = (
        "error[E0382]: borrow of moved value: `p`\n --> src/main.rs:4:52\n  |\n4 | fn main() { let p = P { x: 1 }; "
        'let q = p; println!("{}", p.x); }\n  |                                                    ^^^ value '
        "borrowed here after move\n"
    )
    body = client.post("/v1/fix", json={"code": code, "diagnostics": rendered}).json()
    assert body["verified"] is False
    assert body["route"]["task"] is not None  # routed by the client's E0382, not refused


def test_admin_needs_the_right_bearer_token(live: tuple[httpx.Client, Services]) -> None:
    client, _ = live
    missing = client.get("/admin/runs")
    assert missing.status_code == 401 and "Bearer" in missing.json()["error"]
    wrong = client.get("/admin/runs", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert TOKEN not in wrong.text
    assert client.get("/admin/runs", headers=AUTH).status_code == 200


def test_bad_bodies_get_clear_4xx_never_500(live: tuple[httpx.Client, Services]) -> None:
    client, _ = live
    huge = client.post(
        "/v1/fix", content=b'{"code": "' + b"a" * 70_000 + b'"}', headers={"content-type": "application/json"}
    )
    assert huge.status_code == 413 and "limit" in huge.json()["error"]
    big_code = client.post("/v1/fix", json={"code": "// x\n" * 4000})
    assert big_code.status_code == 413
    cases = [
        {},
        {"code": ""},
        {"code": MOVED, "edition": "2030"},
        {"code": MOVED, "mode": "dylib"},
        {"code": MOVED, "surprise": 1},
        {"code": MOVED, "max_attempts": 99},
    ]
    for payload in cases:
        r = client.post("/v1/fix", json=payload)
        assert r.status_code == 422, (payload, r.text)
        assert r.json()["error"].startswith("invalid request")
    garbage = client.post(
        "/v1/fix", content=b"\xff\xfe not json", headers={"content-type": "application/json"}
    )
    assert garbage.status_code == 400 and garbage.json()["error"]  # undecodable body: a clear 400
    assert client.post("/admin/runs", json={"kind": "noon"}, headers=AUTH).status_code == 422
    assert client.get("/admin/runs/999999", headers=AUTH).status_code == 404


def test_admin_disabled_without_a_token(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = make_settings(tmp_path, tiny_model_dir, admin_token=None)
    services = Services.build(settings)
    with LiveServer(create_app(services)) as server, httpx.Client(base_url=server.url) as client:
        r = client.get("/admin/runs", headers=AUTH)
        assert r.status_code == 403 and "DREAMFIX_ADMIN_TOKEN" in r.json()["error"]


def _routed_koan(task: str, router: TaskRouter) -> str:
    """A train koan whose rustc diagnostics ``router`` (the daemon's) routes to ``task``."""
    sandbox = Sandbox(SandboxConfig())
    for koan in train_koans():
        if router.route(sandbox.check(koan.broken, koan.mode, koan.edition).diagnostics).task == task:
            return koan.broken
    raise AssertionError(f"no train koan routes to {task}")


@pytest.mark.slow
def test_night_trains_gates_promotes_and_the_next_fix_uses_it(live: tuple[httpx.Client, Services]) -> None:
    client, services = live
    r = client.post("/admin/runs", json={"kind": "night"}, headers=AUTH)
    assert r.status_code == 202
    run = wait_run(client, r.json()["run_id"])
    assert run["status"] == "succeeded", run
    assert run["summary"]["pairs_blocked_as_eval"] == 0 or run["summary"]["pairs"] > 0
    adapters = client.get("/admin/adapters", headers=AUTH).json()
    assert adapters["items"], "the night produced versions"
    for item in adapters["items"]:
        assert item["gate"]["reason"] and item["status"] in ("active", "rejected")
        assert item["params"] > 0
    active = adapters["active"]
    assert active, f"the tiny model cannot regress a 0% eval set, so something is promoted: {adapters}"
    task, version = sorted(active.items())[0]
    code = _routed_koan(task, services.serving.router)
    deadline = time.monotonic() + 10
    while services.serving.active_versions().get(task) != version and time.monotonic() < deadline:
        time.sleep(0.1)
    fix = client.post("/v1/fix", json={"code": code}).json()
    assert fix["route"] == {"task": task, "version": version, "confidence": fix["route"]["confidence"]}

    # A second night cannot start while one runs; rollback returns the task to base for the next request.
    back = client.post(f"/admin/adapters/{task}/rollback", headers=AUTH, json={})
    assert back.status_code == 200 and back.json()["active_version"] is None
    fix = client.post("/v1/fix", json={"code": code}).json()
    assert fix["route"]["task"] == task and fix["route"]["version"] is None

    # Requests in flight while versions swap back and forth all succeed.
    def one(_: int) -> int:
        return client.post("/v1/fix", json={"code": code}).status_code

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(one, i) for i in range(12)]
        for _ in range(3):
            assert (
                client.post(
                    f"/admin/adapters/{task}/rollback", headers=AUTH, json={"version": version}
                ).status_code
                == 200
            )
            time.sleep(0.2)
            assert client.post(f"/admin/adapters/{task}/rollback", headers=AUTH, json={}).status_code == 200
        assert [f.result() for f in futures] == [200] * 12
    history = client.get("/admin/metrics/history", headers=AUTH).json()["items"]
    assert any(p["name"] == "eval_pass_baseline" for p in history)
    metrics = client.get("/metrics").text
    assert "dreamfix_http_requests_total" in metrics and "dreamfix_route_epoch" in metrics
