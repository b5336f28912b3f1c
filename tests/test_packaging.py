"""The wheel is self-contained: built from a copy of the sources, installed (not editable) into a fresh venv
outside the checkout, it migrates a database, lists the koans and checks a program — migrations and koans
travel as package data. The venv sees the project venv's third-party packages through a path file (torch is
not installed again), but not the checkout: ``service.__file__`` must be the installed copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from service.db import migrate

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "agent", "router", "learner", "service",
           "migrations", "koans")  # fmt: skip


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.packaging
def test_the_wheel_installs_outside_the_checkout_and_runs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_data"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
        tmp_path, env, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("dreamfix-*.whl")

    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env
    )
    # The project's third-party packages, after the venv's own (a plain path: its .pth files, among them the
    # checkout's editable finder, are not processed).
    Path(purelib.stdout.strip(), "zz_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        tmp_path,
        env,
    )
    assert installed.returncode == 0, installed.stderr

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run(
        [str(python), "-c", "import agent, service; print(service.__file__); print(agent.__file__)"],
        work,
        env,
    )
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert line.startswith(str(venv)), where.stdout  # the wheel's copy, not the checkout
    dreamfix = str(venv / "bin" / "dreamfix")
    run_env = {
        **env,
        "DREAMFIX_DATA_DIR": str(work / "data"),
        "DREAMFIX_DATABASE_URL": f"sqlite:///{work}/df.db",
    }

    upgrade = _run([dreamfix, "db", "upgrade"], work, run_env)
    assert upgrade.returncode == 0, upgrade.stderr
    current = _run([dreamfix, "db", "current"], work, run_env)
    assert current.returncode == 0 and migrate.head() in current.stdout + current.stderr, current

    koans = _run([dreamfix, "koans", "list"], work, run_env)
    assert koans.returncode == 0, koans.stderr
    assert "moves" in koans.stdout and "borrows" in koans.stdout

    program = work / "ok.rs"
    program.write_text('fn main() { println!("hi"); }\n')
    check = _run([dreamfix, "check", str(program)], work, run_env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "verdict: ok" in check.stdout
