"""`dreamfix fix` and `dreamfix eval` through the real CLI entry point (tiny model, real sandbox)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from service.cli import main
from service.settings import get_settings

NEEDS_MUT = 'fn main() {\n    let count = 1;\n    count = 2;\n    println!("{count}");\n}\n'


@pytest.fixture
def settings_env(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("DREAMFIX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DREAMFIX_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("DREAMFIX_AGENT__MAX_NEW_TOKENS", "8")
    monkeypatch.setenv("DREAMFIX_ROUTER__GROUPING", "fine")  # install_version serves the family task moves@v1
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _write(tmp: Path, name: str, content: str | bytes) -> str:
    path = tmp / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


def test_fix_reports_user_errors_clearly(settings_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fix", str(settings_env / "missing.rs")]) == 2
    assert "cannot read source file" in capsys.readouterr().err
    assert main(["fix", _write(settings_env, "latin1.rs", b'fn main() { let s = "\xe9"; }')]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    src = _write(settings_env, "a.rs", NEEDS_MUT)
    assert main(["fix", src, "--diagnostics", _write(settings_env, "d.txt", "all good here\n")]) == 2
    assert "no rustc diagnostics found" in capsys.readouterr().err
    assert main(["fix", src, "--server", "http://127.0.0.1:9"]) == 2
    assert "cannot reach http://127.0.0.1:9/v1/fix" in capsys.readouterr().err


def test_fix_in_process_returns_the_fixed_program_as_json(
    settings_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _write(settings_env, "needs_mut.rs", NEEDS_MUT)
    assert main(["fix", src, "--json", "--max-attempts", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["fixed"] and result["verified"] and result["status"] == "fixed"
    assert "let mut count = 1;" in result["code"]
    assert "+    let mut count = 1;" in result["diff"]
    assert result["error_codes"] == ["E0384"] and result["remaining_error_codes"] == []
    assert [a["strategy"] for a in result["attempts"]] == ["suggestions"]
    # rustc's suggestion did it; the model was not asked. The route is the original program's, as in the API.
    assert result["route"]["version"] is None and result["attempts"][0]["route"]["task"] is None


def test_fix_in_process_with_a_model_that_cannot_fix_exits_1(
    settings_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _write(settings_env, "typo.rs", 'fn main() {\n    let n: i32 = "five";\n    println!("{n}");\n}\n')
    assert main(["fix", src, "--json", "--max-attempts", "2"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert not result["fixed"] and result["status"] == "unfixed" and result["code"].startswith("fn main")
    assert len(result["attempts"]) == 2
    assert result["route"] == {"task": "type_mismatch", "version": None, "confidence": None}


def test_fix_in_process_stops_its_model_rounds_at_the_timeout(
    settings_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deadline already gone once the program is checked: no model round starts, the answer still comes."""
    src = _write(settings_env, "typo.rs", 'fn main() {\n    let n: i32 = "five";\n    println!("{n}");\n}\n')
    assert main(["fix", src, "--json", "--max-attempts", "3", "--timeout", "0.001"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert not result["fixed"] and result["status"] == "unfixed"
    assert not any(a["strategy"].startswith("model") for a in result["attempts"])


class _FakeFixServer(BaseHTTPRequestHandler):
    """A stand-in HTTP peer speaking the documented /v1/fix contract; records what the CLI sent."""

    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append({"path": self.path, **body})
        answer = json.dumps(
            {
                "fixed": True,
                "verified": True,
                "code": body["code"],
                "diff": "",
                "error_codes": [],
                "attempts": [],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_fix_via_server_posts_the_documented_request(
    settings_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = HTTPServer(("127.0.0.1", 0), _FakeFixServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        src = _write(settings_env, "a.rs", NEEDS_MUT)
        diags = _write(
            settings_env, "d.txt", "error[E0384]: cannot assign twice to immutable variable `count`\n"
        )
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        code = main(["fix", src, "--server", url, "--json", "--edition", "2018", "--diagnostics", diags])
    finally:
        server.shutdown()
    assert code == 0
    (request,) = _FakeFixServer.received
    assert request["path"] == "/v1/fix"
    assert (request["code"], request["mode"], request["edition"]) == (NEEDS_MUT, "bin", "2018")
    assert "E0384" in request["diagnostics"]
    assert json.loads(capsys.readouterr().out)["fixed"] is True


def test_fix_via_server_sends_timeout_as_the_requests_timeout_s(
    settings_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _write(settings_env, "a.rs", NEEDS_MUT)
    assert main(["fix", src, "--server", "http://127.0.0.1:9", "--timeout", "0"]) == 2
    assert "--timeout must be a number of seconds > 0" in capsys.readouterr().err
    server = HTTPServer(("127.0.0.1", 0), _FakeFixServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeFixServer.received.clear()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["fix", src, "--server", url, "--json", "--timeout", "42.5"]) == 0
        assert main(["fix", src, "--server", url, "--json"]) == 0
    finally:
        server.shutdown()
        sent = list(_FakeFixServer.received)
        _FakeFixServer.received.clear()
    assert [r.get("timeout_s") for r in sent] == [42.5, None]  # without --timeout: the server's default


@pytest.mark.slow
def test_eval_rustfix_needs_no_model_and_writes_json(
    settings_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = settings_env / "results.json"
    assert main(["eval", "--strategy", "rustfix", "--family", "mutability", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "== rustfix" in printed and "mutability" in printed
    report = json.loads(out.read_text())
    entry = report["strategies"]["rustfix"]
    assert entry["complete"] and report["model"] is None
    records = entry["records"]
    assert records and all(r["family"] == "mutability" for r in records)
    assert entry["stats"]["ALL"]["fixed"] == sum(r["fixed"] and r["verified"] for r in records)
    assert all(a["strategy"] == "suggestions" for r in records for a in r["attempts"])


@pytest.mark.slow
def test_eval_base_with_the_tiny_model_across_formats(
    settings_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = settings_env / "results.json"
    argv = ["eval", "--strategy", "base", "--limit", "2", "--format", "program", "--format", "edits"]
    assert main([*argv, "--out", str(out), "--max-new-tokens", "8"]) == 0
    report = json.loads(out.read_text())
    assert set(report["strategies"]) == {"base@program", "base@edits"}
    for entry in report["strategies"].values():
        assert len(entry["records"]) == 2
        assert all(len(r["attempts"]) == 1 for r in entry["records"])
    families = {r["family"] for r in report["strategies"]["base@program"]["records"]}
    assert len(families) == 2  # --limit takes koans across families in turn


@pytest.mark.slow
def test_eval_runs_best_of_n_with_the_tiny_model(settings_env: Path) -> None:
    """The verifier-guided strategies are selectable from the CLI; best-of-4 samples 4 rows in its 2nd round."""
    out = settings_env / "results.json"
    argv = ["eval", "--strategy", "best-of-4", "--limit", "1", "--max-new-tokens", "8", "--out", str(out)]
    assert main(argv) == 0
    (record,) = json.loads(out.read_text())["strategies"]["best-of-4"]["records"]
    model = [a for a in record["attempts"] if a["strategy"] != "suggestions"]
    assert model, record["attempts"]


def test_eval_rejects_unknown_families(settings_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--strategy", "rustfix", "--family", "nonesuch"]) == 2
    assert "unknown family: nonesuch" in capsys.readouterr().err


def test_greedy_replies_decodes_each_prompt_once_and_keeps_the_order() -> None:
    from service.cli.eval import GreedyReplies

    calls: list[tuple[list[str], list[Any] | None]] = []

    def generate(prompts: list[list[dict[str, str]]], keys: list[Any] | None) -> list[str]:
        calls.append(([p[0]["content"] for p in prompts], keys))
        keys = keys or [None] * len(prompts)
        return [f"reply to {p[0]['content']} on {k}" for p, k in zip(prompts, keys, strict=True)]

    replies = GreedyReplies(generate)
    a, b = [{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]
    moves = ("moves", 1)
    assert replies([a, b, a], [moves, moves, moves]) == [
        "reply to a on ('moves', 1)",
        "reply to b on ('moves', 1)",
        "reply to a on ('moves', 1)",
    ]
    assert calls == [(["a", "b"], [moves, moves])]
    # Same prompt on another task version or the base model is another decode; a repeat is not.
    assert replies([a, a, a], [("moves", 2), moves, None]) == [
        "reply to a on ('moves', 2)",
        "reply to a on ('moves', 1)",
        "reply to a on None",
    ]
    assert calls[-1] == (["a", "a"], [("moves", 2), None])
    assert (replies.hits, replies.misses) == (2, 4)  # the repeated 'a' in the first call, then moves v1


@pytest.mark.slow
def test_eval_loop_replays_the_base_strategys_first_reply(
    settings_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = settings_env / "results.json"
    # One attempt: the tiny model's 2k context cannot hold a feedback prompt; the first attempt is the point.
    argv = ["eval", "--strategy", "base", "--strategy", "loop", "--limit", "2", "--max-attempts", "1"]
    # (--max-attempts sets the loop's attempts; base stays one shot whatever it says)
    assert main([*argv, "--out", str(out), "--max-new-tokens", "8"]) == 0
    report = json.loads(out.read_text())
    base, loop = report["strategies"]["base"], report["strategies"]["loop"]
    assert base["replayed_generations"] == 0
    # Each koan's first loop prompt is the base one-shot prompt (and so is its continuation, if any).
    assert loop["replayed_generations"] >= 2
    for b, lp in zip(base["records"], loop["records"], strict=True):
        assert lp["attempts"][0]["prompt_hash"] == b["attempts"][0]["prompt_hash"]
        assert lp["attempts"][0]["reply"] == b["attempts"][0]["reply"]


def test_eval_from_json_merges_reports_and_counts_regressions_against_base(
    settings_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rustfix = settings_env / "rustfix.json"
    assert main(["eval", "--strategy", "rustfix", "--family", "mutability", "--out", str(rustfix)]) == 0
    report = json.loads(rustfix.read_text())
    # A fake "base" report in which every koan passed: each koan rustfix misses is a regression against it.
    base_entry = json.loads(json.dumps(report["strategies"]["rustfix"]))
    for record in base_entry["records"]:
        record["fixed"] = True
    base = settings_env / "base.json"
    base.write_text(json.dumps({**report, "strategies": {"base": base_entry}}))
    capsys.readouterr()
    merged = settings_env / "merged.json"
    assert main(["eval", "--from-json", str(base), "--from-json", str(rustfix), "--out", str(merged)]) == 0
    printed = capsys.readouterr().out
    assert "== base" in printed and "== rustfix" in printed
    result = json.loads(merged.read_text())
    missed = sorted(r["problem_id"] for r in report["strategies"]["rustfix"]["records"] if not r["fixed"])
    assert result["strategies"]["rustfix"]["regressions_vs_base"] == missed


def test_eval_from_json_rejects_files_that_are_not_reports(
    settings_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = settings_env / "bogus.json"
    bogus.write_text('{"hello": 1}')
    assert main(["eval", "--from-json", str(bogus)]) == 2
    assert "not a `dreamfix eval --out` report" in capsys.readouterr().err
    assert main(["eval", "--from-json", str(settings_env / "missing.json")]) == 2


@pytest.mark.slow
def test_eval_replays_recorded_replies_on_resume_and_from_other_reports(
    settings_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = settings_env / "base.json"
    argv = ["eval", "--strategy", "base", "--limit", "2", "--max-new-tokens", "8"]
    assert main([*argv, "--out", str(first)]) == 0
    base = json.loads(first.read_text())["strategies"]["base"]
    # Another process, another file: its loop replays the base replies recorded in the first report.
    second = settings_env / "loop.json"
    loop_argv = ["eval", "--strategy", "loop", "--limit", "2", "--max-attempts", "1", "--max-new-tokens", "8"]
    assert main([*loop_argv, "--replay-from", str(first), "--out", str(second)]) == 0
    assert "replaying 2 recorded greedy replies" in capsys.readouterr().out
    loop = json.loads(second.read_text())["strategies"]["loop"]
    assert loop["replayed_generations"] >= 2
    for b, lp in zip(base["records"], loop["records"], strict=True):
        assert lp["attempts"][0]["reply"] == b["attempts"][0]["reply"]
        assert lp["attempts"][0]["completion_tokens"] == b["attempts"][0]["completion_tokens"]
    # A different token limit is a different decode: nothing is replayed.
    other = ["eval", "--strategy", "loop", "--limit", "1", "--max-attempts", "1", "--max-new-tokens", "9"]
    assert main([*other, "--replay-from", str(first)]) == 0
    assert "replaying 0 recorded greedy replies" in capsys.readouterr().out


def test_eval_from_json_joins_one_strategy_split_across_reports(
    settings_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = []
    for family in ("mutability", "moves"):
        path = settings_env / f"{family}.json"
        assert main(["eval", "--strategy", "rustfix", "--family", family, "--out", str(path)]) == 0
        parts.append(json.loads(path.read_text())["strategies"]["rustfix"])
    merged = settings_env / "merged.json"
    argv = [
        "eval",
        "--from-json",
        str(settings_env / "mutability.json"),
        "--from-json",
        str(settings_env / "moves.json"),
    ]
    assert main([*argv, "--out", str(merged)]) == 0
    entry = json.loads(merged.read_text())["strategies"]["rustfix"]
    assert len(entry["records"]) == len(parts[0]["records"]) + len(parts[1]["records"])
    assert set(entry["stats"]) == {"mutability", "moves", "ALL"}
    assert (
        entry["stats"]["ALL"]["fixed"]
        == parts[0]["stats"]["ALL"]["fixed"] + parts[1]["stats"]["ALL"]["fixed"]
    )
    assert entry["wall_seconds"] == max(p["wall_seconds"] for p in parts)


@pytest.mark.slow
def test_max_attempts_never_turns_the_base_strategy_into_a_loop(settings_env: Path) -> None:
    out = settings_env / "base.json"
    assert (
        main(
            [
                "eval",
                "--strategy",
                "base",
                "--limit",
                "2",
                "--max-attempts",
                "3",
                "--max-new-tokens",
                "8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    records = json.loads(out.read_text())["strategies"]["base"]["records"]
    assert [len(r["attempts"]) for r in records] == [1, 1]


MOVED = 'fn main() {\n    let s = String::from("hi");\n    let t = s;\n    println!("{} {}", s, t);\n}\n'


def test_fix_serves_the_promoted_version_the_daemon_serves(
    settings_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dreamfix fix` reads the active coefficient versions from the database like the daemon, and routes
    the same input to the same task and version (on main its route table was always empty: no version)."""
    from agent.problems import Problem
    from service.compose import serving_strategy
    from service.db.migrate import upgrade
    from service.db.session import Database
    from service.serving import ServingRuntime
    from tests.helpers import install_version

    monkeypatch.setenv("DREAMFIX_AGENT__SUGGESTIONS_FIRST", "false")
    get_settings.cache_clear()
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.db_url)
    task, version = install_version(settings.db_url, settings_env)
    src = _write(settings_env, "moved.rs", MOVED)
    main(["fix", src, "--json", "--max-attempts", "1"])
    cli = json.loads(capsys.readouterr().out)
    assert cli["route"] == {"task": task, "version": version, "confidence": None}
    assert [(a["route"]["task"], a["route"]["version"]) for a in cli["attempts"]] == [(task, version)]

    from service.cli.fix import build_sandbox, load_runtime

    db = Database(settings.db_url)
    runtime = load_runtime(settings)
    daemon = ServingRuntime(settings, db, build_sandbox(settings), lambda: runtime)
    daemon.load()
    assert daemon.active_versions() == {task: version}
    problem = Problem("same", MOVED, "bin", "2021", None, None)
    record = daemon.make_loop(daemon.pinned_snapshot()).run([problem], serving_strategy(settings, 1))[0]
    db.dispose()
    assert (record.route_task, record.route_version) == (task, version)
    assert [(a.route_task, a.route_version) for a in record.attempts] == [(task, version)]
