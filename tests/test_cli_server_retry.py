"""``dreamfix fix --server`` against a real local HTTP server that sheds load: 429/503 answers are retried
after their ``Retry-After`` (bounded), other errors are not; and ``adapters export`` into an existing folder
is a one-line error naming ``--force``. Every case runs the real command in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from service.client import RetryPolicy, retry_after_seconds, wait_before_retry

REPO = Path(__file__).resolve().parents[1]
FIXED = {"fixed": True, "status": "fixed", "code": "fn main() {}\n", "diff": "", "attempts": []}


class ScriptedServer:
    """Answers POST /v1/fix with the next (status, headers, body) of a script; the last one repeats.
    Records the monotonic time of every request."""

    def __init__(self, script: list[tuple[int, dict[str, str], dict[str, object]]]) -> None:
        self.script = script
        self.times: list[float] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                json.loads(self.rfile.read(length))
                owner.times.append(time.monotonic())
                status, headers, body = owner.script[min(len(owner.times), len(owner.script)) - 1]
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "broken.rs"
    path.write_text("fn main() { let x = 1; x = 2; }\n")
    return path


def _fix(source: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "fix", str(source), "--server", url, "--json", *extra],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "DREAMFIX_DATA_DIR": str(source.parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_busy_answers_are_retried_after_their_retry_after(source: Path) -> None:
    script = [
        (503, {"Retry-After": "1"}, {"detail": "not ready"}),
        (429, {"Retry-After": "2"}, {"detail": "queue full"}),
        (200, {}, FIXED),
    ]
    with ScriptedServer(script) as server:
        proc = _fix(source, server.url)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["fixed"] is True
    assert len(server.times) == 3
    gaps = [b - a for a, b in zip(server.times, server.times[1:], strict=False)]
    assert gaps[0] >= 0.95 and gaps[1] >= 1.95, gaps  # each wait honoured its own Retry-After
    assert gaps[1] < 10
    assert "server busy (503); retrying in 1.0s" in proc.stderr
    assert "server busy (429); retrying in 2.0s" in proc.stderr


def test_a_server_that_stays_busy_gives_up_after_the_bounded_retries(source: Path) -> None:
    with ScriptedServer([(429, {"Retry-After": "0"}, {"detail": "queue full"})]) as server:
        proc = _fix(source, server.url, "--retries", "2")
    assert proc.returncode == 2
    assert len(server.times) == 3  # the first try and two retries, no more
    assert proc.stderr.count("server busy (429)") == 2
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "429" in errors[0] and "queue full" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_other_errors_are_not_retried(source: Path) -> None:
    with ScriptedServer([(422, {"Retry-After": "0"}, {"detail": "code too long"})]) as server:
        proc = _fix(source, server.url)
    assert proc.returncode == 2 and len(server.times) == 1
    assert "422" in proc.stderr and "code too long" in proc.stderr


def test_retry_after_forms_and_caps() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:05 GMT", now=now) == 5.0
    assert retry_after_seconds("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == 0.0  # in the past: at once
    policy = RetryPolicy(base_s=0.5, max_wait_s=3.0)
    request = httpx.Request("POST", "http://x/v1/fix")
    huge = httpx.Response(503, headers={"Retry-After": "3600"}, request=request)
    bare = httpx.Response(429, request=request)
    assert wait_before_retry(huge, 1, policy) == 3.0  # a server cannot park the client for an hour
    assert [wait_before_retry(bare, n, policy) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]


def test_export_into_an_existing_folder_names_force(tmp_path: Path) -> None:
    from tests.helpers import install_version

    db_url = f"sqlite:///{tmp_path}/dreamfix.db"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DREAMFIX_DATABASE_URL": db_url,
        "DREAMFIX_DATA_DIR": str(tmp_path),
    }

    def dreamfix(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service", *argv],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert dreamfix("db", "upgrade").returncode == 0
    install_version(db_url, tmp_path)
    out = tmp_path / "exports"
    first = dreamfix("adapters", "export", "moves@v1", "--out", str(out))
    assert first.returncode == 0, first.stderr
    again = dreamfix("adapters", "export", "moves@v1", "--out", str(out))
    assert again.returncode == 2
    lines = [line for line in again.stderr.splitlines() if "error" in line]
    assert "Traceback" not in again.stderr
    assert len(lines) == 1 and "--force" in lines[0] and "overwrite=True" not in lines[0], again.stderr
    forced = dreamfix("adapters", "export", "moves@v1", "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
