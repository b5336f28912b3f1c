"""The ``dreamfix`` command as an operator meets it: a fast ``--help`` that loads no ML stack, ``--version``, and
one-line errors (exit 2) for bad database URLs. Each case runs the real command in a fresh interpreter."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs main(argv) and then reports which heavy modules the run imported (on stderr's last line).
_PROBE = (
    "import sys\n"
    "from service.cli import main\n"
    "try:\n"
    "    rc = main(sys.argv[1:])\n"
    "except SystemExit as exc:\n"
    "    rc = exc.code\n"
    "heavy = [m for m in ('torch', 'transformers', 'peft', 'fastapi') if m in sys.modules]\n"
    "print('HEAVY=' + ','.join(heavy), file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def _dreamfix(
    *argv: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds the command used (user + system): unlike wall time, not inflated by a busy machine.
    return proc, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def test_help_is_fast_and_imports_no_ml_stack() -> None:
    _dreamfix("--help")  # warm the filesystem cache once; the second run is what an operator sees
    proc, seconds = _dreamfix("--help")
    assert proc.returncode == 0, proc.stderr
    assert "experiment" in proc.stdout and "koans" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == "HEAVY=", proc.stderr
    assert seconds < 2.0, f"dreamfix --help used {seconds:.2f}s of CPU"


def test_version_prints_the_installed_distribution_version() -> None:
    proc, _ = _dreamfix("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"dreamfix {version('dreamfix')}"


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("HEAVY=")]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr  # no traceback
    assert lines[0].startswith("dreamfix: error: ")
    return lines[0]


def test_postgres_scheme_gets_a_one_line_hint_without_the_password() -> None:
    proc, _ = _dreamfix("db", "upgrade", "--url", "postgres://app:s3cret@127.0.0.1:5432/dreamfix")
    line = _one_line_error(proc)
    assert "postgresql+psycopg://app:***@127.0.0.1:5432/dreamfix" in line
    assert "s3cret" not in proc.stderr + proc.stdout


def test_unparsable_database_url_is_a_one_line_error() -> None:
    line = _one_line_error(_dreamfix("db", "current", "--url", "not a url")[0])
    assert "cannot parse the database URL" in line


def test_unreachable_database_is_a_one_line_error() -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    proc, _ = _dreamfix("db", "upgrade", "--url", "postgresql+psycopg://postgres:pw@127.0.0.1:1/dreamfix")
    line = _one_line_error(proc)
    assert "cannot reach the database" in line and "Connection refused" in line
    assert "pw@" not in proc.stderr


def test_serve_waits_a_bounded_time_for_an_unreachable_database_then_fails_in_one_line() -> None:
    proc, seconds = _dreamfix(
        "serve",
        "--no-scheduler",
        env={
            "DREAMFIX_DATABASE_URL": "postgresql+psycopg://postgres:pw@127.0.0.1:1/dreamfix",
            "DREAMFIX_DATABASE_WAIT_S": "1.5",
        },
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("database not reachable yet (attempt") >= 2, (
        proc.stderr
    )  # it retried, and said so
    errors = [line for line in proc.stderr.splitlines() if line.startswith("dreamfix: error: ")]
    assert errors and "cannot reach the database" in errors[-1]
    assert "Traceback" not in proc.stderr and "pw@" not in proc.stderr
    assert seconds < 20, seconds  # CPU seconds: the retries sleep, they do not spin


def test_wait_for_database_returns_at_once_when_reachable(db_url: str) -> None:
    from service.db.session import wait_for_database

    assert wait_for_database(db_url, timeout_s=5.0) == 1


def test_rollback_of_an_unknown_task_is_a_one_line_error(tmp_path: Path) -> None:
    env = {"DREAMFIX_DATABASE_URL": f"sqlite:///{tmp_path}/dreamfix.db", "DREAMFIX_DATA_DIR": str(tmp_path)}
    assert _dreamfix("db", "upgrade", env=env)[0].returncode == 0
    line = _one_line_error(_dreamfix("adapters", "rollback", "no-such-task", env=env)[0])
    assert "no adapter versions for task 'no-such-task'" in line
