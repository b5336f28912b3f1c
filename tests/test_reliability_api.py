"""Issue 17, hostile input over real HTTP: bounded integers, a catch-all 500 that keeps the connection,
413 for streamed oversize bodies, rollback of an unknown task, and no ``?token=`` in the access log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.api.app import create_app
from service.app_services import Services
from tests.live_server import LiveServer
from tests.test_service_api import AUTH, TOKEN, make_settings, wait_ready

BIG = [
    "99999999999999999999",
    "9223372036854775808",
    "9223372036854775807",
    str(2**31),
]


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[tuple[httpx.Client, Services]]:
    settings = make_settings(tmp_path_factory.mktemp("rel"), tiny_model_dir)
    services = Services.build(settings)
    app = create_app(services)

    def boom() -> None:
        raise RuntimeError("a bug the handlers did not foresee")

    app.add_api_route("/test-only/boom", boom, methods=["GET"], include_in_schema=False)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        wait_ready(client)
        yield client, services


@pytest.mark.parametrize("big", BIG)
def test_integers_beyond_the_database_get_422_not_500(live: tuple[httpx.Client, Services], big: str) -> None:
    client, _ = live
    for path in (f"/admin/runs/{big}", f"/admin/episodes/{big}"):
        r = client.get(path, headers=AUTH)
        assert r.status_code == 422, (path, r.status_code, r.text)
        assert r.json()["error"].startswith("invalid request")
    for path, params in (
        ("/admin/episodes", {"run_id": big}),
        ("/admin/episodes", {"offset": big}),
        ("/admin/runs", {"offset": big}),
    ):
        r = client.get(path, params=params, headers=AUTH)
        assert r.status_code == 422, (path, params, r.status_code, r.text)
    r = client.post(
        "/admin/adapters/moves/rollback",
        content=f'{{"version": {big}}}',
        headers={**AUTH, "content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    r = client.post("/admin/adapters/moves/rollback", json={"version": 1e20}, headers=AUTH)
    assert r.status_code == 422, r.text
    # In range still works: a missing row is a 404.
    assert client.get("/admin/runs/2147483647", headers=AUTH).status_code == 404
    assert client.get("/admin/episodes", params={"offset": 2147483647}, headers=AUTH).status_code == 200


def test_crash_answers_500_with_incident_and_keeps_the_connection(
    live: tuple[httpx.Client, Services],
) -> None:
    client, _ = live
    r = client.get("/test-only/boom")
    assert r.status_code == 500
    assert "incident" in r.json()["error"] and "RuntimeError" not in r.text
    # The same keep-alive connection must answer the next request (main reset it).
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
        assert client.get("/test-only/boom").status_code == 500


def test_streamed_oversize_body_gets_413(live: tuple[httpx.Client, Services]) -> None:
    client, services = live
    cap = services.settings.limits.max_body_bytes

    def chunks() -> Iterator[bytes]:
        yield b'{"code": "'
        for _ in range(cap // 4096 + 4):
            yield b"a" * 4096
        yield b'"}'

    r = client.post("/v1/fix", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert "limit" in r.json()["error"]
    # A streamed body under the cap still reaches the handler.
    small = client.post(
        "/v1/check",
        content=iter([b'{"code": "fn main() {}"', b"}"]),
        headers={"content-type": "application/json"},
    )
    assert small.status_code == 200, small.text


def test_a_problem_longer_than_the_model_context_gets_413_not_500(
    live: tuple[httpx.Client, Services],
) -> None:
    """Within the code size limit, but its prompt outgrows the tiny model's 2,048-token context."""
    client, services = live
    padding = "".join(
        f"    // padding line {i:04d}: the quick brown fox jumps over the lazy dog\n" for i in range(120)
    )
    code = f'fn main() {{\n{padding}    let n: i32 = "long";\n    println!("{{n}}");\n}}\n'
    assert len(code) < services.settings.limits.max_code_bytes
    r = client.post("/v1/fix", json={"code": code})
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert "does not fit the model" in error and "context of 2048 tokens" in error, error
    episode_id = int(error.rsplit("episode ", 1)[1].rstrip(")"))
    episode = client.get(f"/admin/episodes/{episode_id}", headers=AUTH).json()
    assert episode["final_status"] == "prompt_too_long", episode
    # The same server still answers a problem that fits.
    small = client.post("/v1/fix", json={"code": 'fn main() {\n    let n: i32 = "x";\n}\n'})
    assert small.status_code == 200, small.text


def test_rollback_of_an_unknown_task_is_404_without_an_epoch_bump(
    live: tuple[httpx.Client, Services],
) -> None:
    client, _ = live
    before = client.get("/readyz").json()["route_epoch"]
    r = client.post("/admin/adapters/no-such-task/rollback", headers=AUTH)
    assert r.status_code == 404, r.text
    assert "no-such-task" in r.json()["error"]
    after = client.get("/admin/adapters", headers=AUTH).json()["served_epoch"]
    with_sync = client.get("/readyz").json()["route_epoch"]
    assert after == before and with_sync == before


def test_query_token_never_reaches_the_access_log(live: tuple[httpx.Client, Services]) -> None:
    client, _ = live
    access = logging.getLogger("uvicorn.access")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Keep()
    old_level = access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        client.get("/admin/runs", params={"token": TOKEN, "limit": 1}, headers=AUTH)
        client.get("/healthz", params={"x": 1, "token": TOKEN})
    finally:
        access.removeHandler(handler)
        access.setLevel(old_level)
    assert any("/admin/runs" in m for m in records), records
    assert not any(TOKEN in m for m in records), records
    assert any("[redacted]" in m for m in records), records


def test_openapi_documents_every_status_each_route_answers(live: tuple[httpx.Client, Services]) -> None:
    client, _ = live
    spec = client.get("/openapi.json").json()

    def documented(method: str, template: str) -> set[int]:
        return {int(code) for code in spec["paths"][template][method.lower()]["responses"]}

    # Real requests that answer each error status; each must be one its route documents.
    cases = [
        ("GET", "/admin/runs", "/admin/runs", {}, None),
        ("GET", "/admin/runs", "/admin/runs", AUTH, None),
        ("GET", "/admin/runs/{run_id}", "/admin/runs/999999", AUTH, None),
        ("GET", "/admin/runs/{run_id}", "/admin/runs/0", AUTH, None),
        ("GET", "/admin/runs/{run_id}", "/admin/runs/1", {"Authorization": "Bearer wrong"}, None),
        ("POST", "/admin/adapters/{task}/rollback", "/admin/adapters/nonesuch/rollback", AUTH, None),
        ("GET", "/admin/episodes/{episode_id}", "/admin/episodes/999999", AUTH, None),
        ("POST", "/admin/runs", "/admin/runs", AUTH, {"kind": "weekly"}),
        ("POST", "/v1/check", "/v1/check", {}, {"code": ""}),
        ("POST", "/v1/check", "/v1/check", {}, {"code": "x" * 20000}),
        ("POST", "/v1/fix", "/v1/fix", {}, {"code": "x" * 20000}),
        ("POST", "/v1/fix", "/v1/fix", {}, {"mode": "bin"}),
    ]
    seen = set()
    for method, template, url, headers, body in cases:
        r = client.request(method, url, headers=headers, json=body)
        assert r.status_code >= 400 or r.status_code == 200
        if r.status_code >= 400:
            assert "error" in r.json()
        assert r.status_code in documented(method, template), (method, url, r.status_code)
        seen.add(r.status_code)
    assert {401, 403, 404, 413, 422} <= seen
    # And what cannot be provoked cheaply here is documented all the same.
    assert {429, 503, 504} <= documented("POST", "/v1/fix")
    assert {429, 504} <= documented("POST", "/v1/check")
    assert max(documented("POST", "/admin/runs")) >= 409
    assert 409 in documented("POST", "/admin/runs") and 409 in documented(
        "POST", "/admin/adapters/{task}/rollback"
    )
    assert 503 in documented("GET", "/readyz")
    for template, methods in spec["paths"].items():
        for method, op in methods.items():
            assert 500 in {int(c) for c in op["responses"]} or template in ("/healthz", "/readyz"), (
                method,
                template,
            )
