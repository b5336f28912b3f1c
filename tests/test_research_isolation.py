"""The research package (``service/research``) stays off the product path: the daemon never imports it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
import service.api.app, service.app_services, service.compose, service.serving, service.night, service.day
print(json.dumps(sorted(m for m in sys.modules if m == "service.research" or m.startswith("service.research."))))
"""


def _research_modules_after(code: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    modules: list[str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return modules


def test_the_daemon_imports_nothing_of_the_research_package() -> None:
    assert _research_modules_after(PROBE) == []


def test_the_probe_sees_the_research_package_when_it_is_imported() -> None:
    # The same probe, once something does import a stage: it must name it (so the test above can fail).
    code = PROBE.replace("import json, sys", "import json, sys\nimport service.research.sweep")
    assert "service.research.sweep" in _research_modules_after(code)
