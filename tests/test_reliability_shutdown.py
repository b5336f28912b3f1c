"""Issue 17, stopping: `dreamfix serve` (a real `python -m service serve` process) that gets SIGTERM while a
/v1/check runs a test binary that sleeps for a minute gives the request ``limits.shutdown_grace_s``, then
kills the jail and removes its work dir and exits — within the grace plus a margin, not after the check."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from agent.sandbox import process_start_ticks, workdir_owner
from tests.helpers import TOKEN
from tests.live_server import free_port

GRACE_S = 2.0
#: Start-up of the stop (logging, the lifespan's shutdown) and the interpreter's exit on a loaded machine.
MARGIN_S = 8.0

#: A test-mode program whose one test sleeps a minute (a distinct source each run: no cached verdict).
SLEEPER = (
    "// sleeps {stamp}\n"
    "pub fn nap() {{ std::thread::sleep(std::time::Duration::from_secs(60)); }}\n"
    "#[cfg(test)]\nmod tests {{\n    #[test]\n    fn naps() {{ super::nap(); }}\n}}\n"
)


def _cmdlines_naming(text: str) -> list[int]:
    """Pids of the processes whose command line contains ``text`` (bwrap's names the work dir it binds)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                if text.encode() in handle.read():
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_sigterm_kills_a_running_jail_removes_its_dir_and_exits_within_the_grace(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    work = tmp_path / "tmp"  # the daemon's TMPDIR: its sandbox work root
    work.mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(work),
        "DREAMFIX_DATA_DIR": str(tmp_path / "data"),
        "DREAMFIX_MODEL": str(tiny_model_dir),
        "DREAMFIX_ADMIN_TOKEN": TOKEN,
        "DREAMFIX_SCHEDULER__ENABLED": "false",
        "DREAMFIX_LIMITS__SHUTDOWN_GRACE_S": str(GRACE_S),
        "DREAMFIX_LIMITS__CHECK_TIMEOUT_S": "120",
        "DREAMFIX_SANDBOX__WALL_SECONDS": "120",
    }
    port = free_port()
    log = tmp_path / "server.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port)],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with (
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client,
            ThreadPoolExecutor(1) as pool,
        ):
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and server.poll() is None, log.read_text()
                time.sleep(0.2)
            pending = pool.submit(
                client.post, "/v1/check", json={"code": SLEEPER.format(stamp=time.time_ns()), "mode": "test"}
            )
            # The test binary is built and running in its jail: its work dir holds it, bwrap names the dir.
            deadline = time.monotonic() + 60
            while True:
                dirs = list(work.glob(f"dreamfix-sbx-{server.pid}-*"))
                if dirs and (dirs[0] / "test-bin").exists() and _cmdlines_naming(str(dirs[0])):
                    break
                assert time.monotonic() < deadline and not pending.done(), log.read_text()
                time.sleep(0.1)
            workdir = dirs[0]
            # Named after the daemon's pid and its start time (a restart that reuses the pid is told apart).
            assert workdir_owner(workdir.name) == (server.pid, process_start_ticks(server.pid))
            time.sleep(0.5)  # the test binary is asleep in its test now
            stopped = time.monotonic()
            os.kill(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=GRACE_S + MARGIN_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the daemon still ran {GRACE_S + MARGIN_S:g}s after SIGTERM:\n{log.read_text()}")
            took = time.monotonic() - stopped
            assert took >= GRACE_S - 0.5, "the request in flight was not given its grace"
            assert took < GRACE_S + MARGIN_S
            try:  # cancelled at the grace: uvicorn's 500, or the connection closes with the process
                answer: httpx.Response | None = pending.result(timeout=30)
            except httpx.TransportError:
                answer = None
            assert answer is None or answer.status_code >= 500, answer.text
        assert not workdir.exists(), log.read_text()
        assert list(work.glob("dreamfix-sbx-*")) == [], log.read_text()
        # No jail of it is left: bwrap's command line names the work dir.
        deadline = time.monotonic() + 5
        while _cmdlines_naming(str(workdir)):
            assert time.monotonic() < deadline, "a jail outlived the daemon"
            time.sleep(0.05)
        assert "killed 1 running jail(s)" in log.read_text()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
