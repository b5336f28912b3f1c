"""``dreamfix adapters export`` writes a PEFT folder any PEFT release the project allows can load: only the
standard LoRA fields, the upstream Hugging Face id as ``base_model_name_or_path``, files readable by all
(0644, even under umask 077); ``dreamfix adapters routes`` prints the route table with ``TASK@vN`` names.

The oldest-PEFT check runs when ``DREAMFIX_OLD_PEFT_PYTHON`` names an interpreter with peft 0.13 (see
docs/serving-adapters.md for how to make one); it is skipped otherwise."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from learner.share.peft_io import lora_config, upstream_model_id
from tests.helpers import install_version

REPO = Path(__file__).resolve().parents[1]
QWEN = "Qwen/Qwen2.5-Coder-0.5B-Instruct"
STANDARD_FIELDS = set(lora_config(1, [], None))

# Loads the export on the tiny model with whatever PEFT the interpreter has; saves base and adapted logits.
_LOAD = """
import sys, torch, peft
from peft import LoraConfig, PeftModel
from learner.tiny import build_tiny_model
folder, out = sys.argv[1], sys.argv[2]
LoraConfig.from_pretrained(folder)
model, _ = build_tiny_model(seed=0)
ids = torch.arange(3, 15).reshape(1, 12)
with torch.no_grad():
    base = model(ids).logits
    adapted = PeftModel.from_pretrained(model, folder)(ids).logits
torch.save({"base": base, "adapted": adapted, "peft": peft.__version__, "file": peft.__file__}, out)
"""


def _run(
    python: str, *argv: str, env: dict[str, str], umask: int | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, *argv],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("export")
    env = {
        "DREAMFIX_DATABASE_URL": f"sqlite:///{tmp_path}/dreamfix.db",
        "DREAMFIX_DATA_DIR": str(tmp_path),
        "DREAMFIX_ROUTER__GROUPING": "fine",  # install_version serves the family task moves@v1
    }
    assert _run(sys.executable, "-m", "service", "db", "upgrade", env=env).returncode == 0
    install_version(env["DREAMFIX_DATABASE_URL"], tmp_path)  # a version saved without its base model id
    proc = _run(
        sys.executable, "-m", "service", "adapters", "export", "moves@v1", "--out", str(tmp_path / "out"),
        env={**env, "DREAMFIX_MODEL": "qwen2.5-coder-0.5b-instruct"}, umask=0o077,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    folder = Path(proc.stdout.strip())
    assert folder == tmp_path / "out" / "moves@v1"
    routes = _run(sys.executable, "-m", "service", "adapters", "routes", env=env)
    assert routes.returncode == 0, routes.stderr
    (tmp_path / "routes.json").write_text(routes.stdout)
    return folder


def test_export_has_only_standard_fields_the_upstream_id_and_readable_files(exported: Path) -> None:
    config = json.loads((exported / "adapter_config.json").read_text())
    assert set(config) == STANDARD_FIELDS
    assert "alora_invocation_tokens" not in config and "peft_version" not in config
    assert config["base_model_name_or_path"] == QWEN
    assert config["peft_type"] == "LORA" and config["r"] == config["lora_alpha"] == 2
    for path in (exported / "adapter_config.json", exported / "adapter_model.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE(exported.stat().st_mode) == 0o755


def test_export_loads_in_the_installed_peft(exported: Path, tmp_path: Path) -> None:
    proc = _run(sys.executable, "-c", _LOAD, str(exported), str(tmp_path / "new.pt"), env={})
    assert proc.returncode == 0, proc.stderr
    out = torch.load(tmp_path / "new.pt")
    assert (out["adapted"] - out["base"]).abs().max() > 1e-3  # the adapter is applied


def test_export_loads_in_the_oldest_allowed_peft(exported: Path, tmp_path: Path) -> None:
    old = os.environ.get("DREAMFIX_OLD_PEFT_PYTHON")
    if not old:
        pytest.skip("DREAMFIX_OLD_PEFT_PYTHON (an interpreter with peft 0.13) not set")
    new = _run(sys.executable, "-c", _LOAD, str(exported), str(tmp_path / "new.pt"), env={})
    old_run = _run(old, "-c", _LOAD, str(exported), str(tmp_path / "old.pt"), env={})
    assert new.returncode == 0, new.stderr
    assert old_run.returncode == 0, old_run.stderr
    a, b = torch.load(tmp_path / "new.pt"), torch.load(tmp_path / "old.pt")
    assert b["peft"].startswith("0.13.") and a["peft"] != b["peft"]
    assert torch.allclose(a["adapted"], b["adapted"], atol=1e-5)


def test_route_table_names_the_active_version(exported: Path) -> None:
    table = json.loads((exported.parents[1] / "routes.json").read_text())
    assert table["format"] == "dreamfix-route-table/2" and 0 <= table["threshold"] <= 1
    by_task = {r["task"]: r for r in table["routes"]}
    assert by_task["moves"]["adapter"] == "moves@v1" == exported.name
    assert "E0382" in by_task["moves"]["codes"] and by_task["moves"]["group"] == "moves"
    assert all(r["adapter"] is None for t, r in by_task.items() if t != "moves")


def test_route_table_of_coarse_groups_names_each_rules_group_adapter() -> None:
    from service.cli.adapters import route_table
    from service.settings import Settings

    table = route_table({"ownership": 2}, Settings().router.task_router())
    by_task = {r["task"]: r for r in table["routes"]}
    assert len(by_task) == 18 and {r["group"] for r in table["routes"]} == {"ownership", "types", "items"}
    assert by_task["moves"]["adapter"] == by_task["borrows"]["adapter"] == "ownership@v2"
    assert by_task["traits"]["group"] == "types" and by_task["traits"]["adapter"] is None


def test_upstream_model_id_sources(tmp_path: Path) -> None:
    assert upstream_model_id("qwen2.5-coder-0.5b-instruct", tmp_path) == QWEN
    provisioned = tmp_path / "converted"
    provisioned.mkdir()
    (provisioned / "dreamfix-model.json").write_text(json.dumps({"upstream": "org/model-a"}))
    assert upstream_model_id(str(provisioned), tmp_path) == "org/model-a"
    baked = tmp_path / "opt" / "qwen"  # the Docker image's model path: a converted release by its provenance
    baked.mkdir(parents=True)
    (baked / "dreamfix-model.json").write_text(json.dumps({"name": "qwen2.5-coder-0.5b-instruct"}))
    assert upstream_model_id(str(baked), tmp_path) == QWEN
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text(json.dumps({"_name_or_path": "org/model-b"}))
    assert upstream_model_id("plain", tmp_path) == "org/model-b"  # a name in the model cache
    assert upstream_model_id("org/model-c", tmp_path) == "org/model-c"
    assert upstream_model_id("tiny", tmp_path) is None and upstream_model_id(None) is None
