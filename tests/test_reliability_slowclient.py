"""Slow clients against the real server (uvicorn with ``service.api.slowclient.server_options``), over raw
sockets: a stalled request line or header block, an idle kept-alive connection and a trickling body are
closed at their deadlines; a slow but steady client is still answered."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.api.app import create_app
from service.api.slowclient import server_options
from service.app_services import Services
from tests.helpers import make_settings, wait_ready
from tests.live_server import LiveServer

HEADER_S = 2.0
BODY_S = 3.0
KEEP_ALIVE_S = 1.0
SLACK_S = 3.0  # a loaded 2-core machine: how late a close may come


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[int]:
    import httpx

    limits = {
        "max_body_bytes": 64 * 1024,
        "max_code_bytes": 16 * 1024,
        "queue_size": 32,
        "header_timeout_s": HEADER_S,
        "body_timeout_s": BODY_S,
        "keep_alive_s": KEEP_ALIVE_S,
    }
    settings = make_settings(tmp_path_factory.mktemp("slow"), tiny_model_dir, limits=limits)
    services = Services.build(settings)
    with LiveServer(create_app(services), **server_options(settings.limits)) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            wait_ready(client)
        yield server.port


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.settimeout(30)
    return sock


def _until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the socket, and how long that took."""
    start = time.monotonic()
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - start


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole HTTP response (status, headers, body) read off a kept-alive socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the headers: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "closed inside the body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    "partial",
    [b"", b"POST /v1/ch", b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: app"],
    ids=["nothing", "half-a-request-line", "half-the-headers"],
)
def test_a_stalled_request_is_closed_at_the_header_deadline(port: int, partial: bytes) -> None:
    with _connect(port) as sock:
        sock.sendall(partial)
        data, took = _until_closed(sock)
    assert HEADER_S - 0.2 <= took <= HEADER_S + SLACK_S, took
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b"request headers not complete within 2s" in data


def test_an_idle_kept_alive_connection_closes_after_keep_alive_s(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = _response(sock)
        assert status == 200 and headers.get("connection") != "close"
        data, took = _until_closed(sock)
    # uvicorn's own default is 5 s: closing within ~1 s shows the setting reached it.
    assert data == b"" and KEEP_ALIVE_S - 0.2 <= took <= KEEP_ALIVE_S + SLACK_S, (data, took)


def test_a_trickling_body_gets_408_at_the_body_deadline(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(
            b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n"
        )
        start = time.monotonic()
        sock.settimeout(0.4)
        answer = b""
        while time.monotonic() - start < BODY_S + SLACK_S:
            try:
                sock.sendall(b'{"code"')  # 7 bytes every 0.4 s: 400 would take 23 s
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if not chunk:
                break
            answer += chunk
        took = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"request body not complete within 3s" in answer
    assert BODY_S - 0.2 <= took <= BODY_S + SLACK_S, took


def test_a_slow_but_steady_client_is_answered_and_kept_alive(port: int) -> None:
    body = json.dumps({"code": "fn main() {}\n"}).encode()
    head = (
        "POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with _connect(port) as sock:
        for _ in range(2):  # the second request rides the kept-alive connection
            for i in range(0, len(head), len(head) // 4 + 1):  # headers over ~1.2 s (deadline 2 s)
                sock.sendall(head[i : i + len(head) // 4 + 1])
                time.sleep(0.3)
            for i in range(0, len(body), 4):  # the body over ~1.8 s (deadline 3 s)
                sock.sendall(body[i : i + 4])
                time.sleep(1.8 / (len(body) / 4))
            status, _, answer = _response(sock)
            assert status == 200, answer
            assert json.loads(answer)["ok"] is True
            time.sleep(KEEP_ALIVE_S / 2)
