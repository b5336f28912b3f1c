"""Issue 14 item 3 and issue 17: the API's contract as OpenAPI states it, on a real server (uvicorn, the
tiny model, SQLite) — a response model on every route, every status a route answers documented, the
string enums' allowed values listed, admin routes behind the bearer scheme — and the source rule that no
function in ``service/api`` runs past ~80 lines."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.sandbox import Verdict
from service.api.app import create_app
from service.api.enums import AttemptVerdict, FinalStatus, RunStatus
from service.app_services import Services
from service.jobs import RunContext
from tests.helpers import AUTH, make_settings, wait_ready, wait_run
from tests.live_server import LiveServer

API_DIR = Path(__file__).resolve().parents[1] / "service" / "api"


def _instant_run(ctx: RunContext) -> dict[str, Any]:
    return {"instant": True}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[httpx.Client]:
    services = Services.build(make_settings(tmp_path_factory.mktemp("contract"), tiny_model_dir))
    services.jobs.bodies = {"day": _instant_run, "night": _instant_run}  # no training: the run rows are real
    with LiveServer(create_app(services)) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        wait_ready(client)
        yield client


@pytest.fixture(scope="module")
def openapi(api: httpx.Client) -> dict[str, Any]:
    spec: dict[str, Any] = api.get("/openapi.json").json()
    return spec


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


def test_every_route_documents_a_response_model_413_and_500(openapi: dict[str, Any]) -> None:
    ops = list(_operations(openapi))
    assert len(ops) == 13, [f"{m} {p}" for m, p, _ in ops]
    for method, path, op in ops:
        ok = next(code for code in op["responses"] if code.startswith("2"))
        content = op["responses"][ok]["content"]
        schema = next(iter(content.values()))["schema"]
        assert schema.get("$ref") or schema.get("type") == "string", (method, path, schema)
        assert schema != {}, f"{method} {path} has no response model"
        # Any request's body is capped (BodyLimitMiddleware), any request may be too slow to arrive (the
        # slow-client deadlines), and any route may fail.
        assert {"408", "413", "500"} <= set(op["responses"]), (method, path)


def test_admin_routes_declare_the_bearer_scheme_and_their_401_403(openapi: dict[str, Any]) -> None:
    assert openapi["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    admin = [(m, p, op) for m, p, op in _operations(openapi) if p.startswith("/admin")]
    assert len(admin) == 8
    for method, path, op in admin:
        assert op["security"] == [{"HTTPBearer": []}], (method, path)
        assert {"401", "403"} <= set(op["responses"]), (method, path)
        assert not any(p["name"].lower() == "authorization" for p in op.get("parameters", [])), (method, path)


def test_routes_with_a_body_document_400_and_422(openapi: dict[str, Any]) -> None:
    with_body = [(m, p, op) for m, p, op in _operations(openapi) if "requestBody" in op]
    assert {p for _, p, _ in with_body} == {
        "/v1/fix",
        "/v1/check",
        "/admin/runs",
        "/admin/adapters/{task}/rollback",
    }
    for method, path, op in with_body:
        assert {"400", "422"} <= set(op["responses"]), (method, path)
    fix = openapi["paths"]["/v1/fix"]["post"]["responses"]
    assert {"429", "499", "503", "504"} <= set(fix)
    assert "Retry-After" in openapi["paths"]["/v1/check"]["post"]["responses"]["429"]["headers"]
    assert "Retry-After" in fix["429"]["headers"] and "Retry-After" in fix["503"]["headers"]
    assert "409" in openapi["paths"]["/admin/runs"]["post"]["responses"]
    assert "404" in openapi["paths"]["/admin/runs/{run_id}"]["get"]["responses"]


def test_statuses_origins_and_verdicts_are_enums_in_openapi(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    assert set(schemas["RunStatus"]["enum"]) == {s.value for s in RunStatus}
    assert set(schemas["RunKind"]["enum"]) == {"day", "night"}
    assert set(schemas["RunTrigger"]["enum"]) == {"schedule", "admin", "cli"}
    assert set(schemas["ProblemOrigin"]["enum"]) == {"client", "koan", "day", "generated"}
    assert set(schemas["Verdict"]["enum"]) == {v.value for v in Verdict}
    assert set(schemas["AttemptVerdict"]["enum"]) == {v.value for v in Verdict} | {
        "no_candidate",
        "prompt_too_long",
    }
    assert "already_ok" in schemas["FinalStatus"]["enum"]
    assert schemas["CheckResponse"]["properties"]["verdict"] == {"$ref": "#/components/schemas/Verdict"}
    runs = next(p for p in openapi["paths"]["/admin/runs"]["get"]["parameters"] if p["name"] == "kind")
    assert {"$ref": "#/components/schemas/RunKind"} in runs["schema"]["anyOf"]


def test_the_enums_cover_what_the_code_writes() -> None:
    # agent.loop.FixLoop._close: a loop outcome, or the verdict of an original with nothing to repair.
    repairable = {Verdict.OK, Verdict.COMPILE_ERROR, Verdict.TEST_FAILED}
    assert {v.value for v in Verdict if v not in repairable} <= {s.value for s in FinalStatus}
    assert {v.value for v in Verdict} <= {v.value for v in AttemptVerdict}


def test_a_get_with_an_oversize_body_is_the_documented_413(api: httpx.Client) -> None:
    r = api.request("GET", "/healthz", content=b"x" * (64 * 1024 + 1))
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_a_filter_outside_its_enum_is_a_clear_422(api: httpx.Client) -> None:
    r = api.get("/admin/runs", params={"kind": "noon"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"].startswith("invalid request: query.kind")
    r = api.get("/admin/episodes", params={"origin": "mars"}, headers=AUTH)
    assert r.status_code == 422 and "origin" in r.json()["error"]
    assert api.get("/admin/episodes", params={"origin": "client"}, headers=AUTH).status_code == 200


def test_timestamps_carry_their_utc_offset(api: httpx.Client) -> None:
    # Found by the fuzzer: SQLite hands back naive datetimes, which are not an OpenAPI date-time.
    created = api.post("/admin/runs", json={"kind": "day"}, headers=AUTH)
    assert created.status_code == 202 and created.json()["status"] == "queued"
    run = wait_run(api, created.json()["run_id"])
    assert run["status"] == "succeeded" and run["trigger"] == "admin" and run["log"] == ""
    for field in ("created_at", "started_at", "finished_at"):
        stamp = datetime.fromisoformat(run[field])
        assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0, (field, run[field])
    listed = api.get("/admin/runs", headers=AUTH).json()["items"][0]
    assert listed["id"] == run["id"] and datetime.fromisoformat(listed["created_at"]).tzinfo is not None


def test_no_function_in_service_api_runs_past_80_lines() -> None:
    too_long = []
    files = sorted(API_DIR.rglob("*.py"))
    assert len(files) >= 10, files  # the package, split by concern
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 80:
                    too_long.append(f"{path.relative_to(API_DIR)}:{node.lineno} {node.name} ({length} lines)")
    assert not too_long, too_long


NUL_INPUTS = [
    ("GET", "/admin/adapters", {"params": {"task": "\x00"}}, "query.task"),
    ("GET", "/admin/episodes", {"params": {"family": "a\x00"}}, "query.family"),
    ("GET", "/admin/episodes", {"params": {"task": "a\x00"}}, "query.task"),
    ("GET", "/admin/metrics/history", {"params": {"name": "\x00"}}, "query.name"),
    ("POST", "/admin/adapters/a%00/rollback", {"json": {}}, "path.task"),
    ("POST", "/v1/fix", {"json": {"code": 'fn main() { let x: i32 = "a"; }\x00'}}, "code"),
    ("POST", "/v1/fix", {"json": {"code": "fn main() {}", "diagnostics": "error\x00"}}, "diagnostics"),
    ("POST", "/v1/fix", {"json": {"code": "fn main() {}", "tests": "\x00"}}, "tests"),
]


@pytest.mark.postgres
def test_nul_in_text_bound_for_postgresql_is_a_422_not_a_500(
    postgres_url: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    # PostgreSQL text cannot hold NUL: these were 500s (psycopg DataError) before the edge refused them.
    services = Services.build(make_settings(tmp_path, tiny_model_dir, database_url=postgres_url))
    with LiveServer(create_app(services)) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        wait_ready(client)
        for method, path, kwargs, where in NUL_INPUTS:
            r = client.request(method, path, headers=AUTH, **kwargs)
            assert r.status_code == 422, (path, kwargs, r.status_code, r.text)
            assert (
                r.json()["error"]
                == f"invalid request: {where}: Value error, must not contain NUL (\\x00) characters"
            )
        # The same fields without the NUL are served as before.
        assert client.get("/admin/episodes", params={"family": "a"}, headers=AUTH).status_code == 200
        assert client.post("/v1/fix", json={"code": "fn main() {}\n"}).status_code == 200


def test_openapi_states_the_nul_free_text(openapi: dict[str, Any]) -> None:
    fix = openapi["components"]["schemas"]["FixRequest"]["properties"]
    assert fix["code"]["pattern"] == "^[^\\x00]*$"
    history = openapi["paths"]["/admin/metrics/history"]["get"]["parameters"]
    assert next(p for p in history if p["name"] == "name")["schema"]["pattern"] == "^[^\\x00]*$"


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/v1/fix", {"code": "fn main() {}", "max_attempts": True}, "max_attempts"),  # found by the fuzzer
        ("/v1/fix", {"code": "fn main() {}", "max_attempts": 1.0}, "max_attempts"),
        ("/v1/fix", {"code": "fn main() {}", "hints": 1}, "hints"),
        ("/v1/check", {"code": 5}, "code"),
        ("/admin/adapters/moves/rollback", {"version": "2"}, "version"),
    ],
)
def test_request_bodies_take_json_types_as_openapi_states_them(
    api: httpx.Client, path: str, body: dict[str, Any], where: str
) -> None:
    r = api.post(path, json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith(f"invalid request: {where}: "), r.json()


def test_a_run_kind_is_still_read_from_its_json_string(api: httpx.Client) -> None:
    assert api.post("/admin/runs", json={"kind": "night"}, headers=AUTH).status_code in (202, 409)
