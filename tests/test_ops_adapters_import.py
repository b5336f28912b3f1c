"""``dreamfix adapters import``: PEFT LoRA adapters saved by peft from the tiny model seed Phase 1 — a basis
and one version per task, in the database (bytes + sha256), served by the daemon, exported back to PEFT
with the same delta."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from learner.share.peft_io import import_peft
from learner.tiny import build_tiny_model
from service.cli import main
from service.compose import make_sandbox
from service.db.migrate import upgrade
from service.db.repositories import AdapterRepository, BasisRepository, RouteStateRepository
from service.db.session import Database
from service.serving import ServingRuntime
from service.settings import get_settings


@pytest.fixture
def env(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("DREAMFIX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DREAMFIX_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("DREAMFIX_SHARE__VARIANCE_THRESHOLD", "1.0")  # keep every direction: exact deltas
    get_settings.cache_clear()
    upgrade(get_settings().db_url)
    yield tmp_path
    get_settings.cache_clear()


def _peft_adapter(folder: Path, seed: int) -> dict[str, torch.Tensor]:
    """A random rank-4 PEFT LoRA on the tiny model's q_proj/v_proj, saved by peft; returns its deltas."""
    model, _ = build_tiny_model(0)
    torch.manual_seed(seed)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(str(folder))
    return {
        name.removeprefix("base_model.model."): module.get_delta_weight("default").detach()
        for name, module in peft_model.named_modules()
        if hasattr(module, "get_delta_weight") and "default" in getattr(module, "lora_A", {})
    }


def test_import_seeds_phase1_and_the_daemon_serves_the_imported_versions(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    moves = _peft_adapter(env / "peft-moves", seed=1)
    _peft_adapter(env / "peft-borrows", seed=2)
    argv = ["adapters", "import", str(env / "peft-moves"), str(env / "peft-borrows")]
    assert main([*argv, "--task", "moves", "--task", "borrows", "--activate"]) == 0
    out = capsys.readouterr().out
    assert "moves@v1 active" in out and "borrows@v1 active" in out and "basis " in out
    settings = get_settings()
    db = Database(settings.db_url)
    try:
        with db.session() as s:
            basis = BasisRepository(s).latest()
            assert basis is not None and basis.sha256 is not None
            assert basis.meta["origin"] == "peft-import"
            assert RouteStateRepository(s).get().basis_id == basis.id
            rows = AdapterRepository(s).active()
            assert {(r.task, r.version) for r in rows} == {("moves", 1), ("borrows", 1)}
            assert all(r.sha256 and r.artifact and r.basis_id == basis.id for r in rows)
        serving = ServingRuntime(settings, db, make_sandbox(settings), lambda: _runtime(settings))
        serving.load()
        assert serving.model_error is None and serving.active_versions() == {"moves": 1, "borrows": 1}
    finally:
        db.dispose()
    assert main(["adapters", "export", "moves@v1", "--out", str(env / "out")]) == 0
    capsys.readouterr()
    back = import_peft(env / "out" / "moves@v1")
    assert set(back.layers) == set(moves) and len(moves) == 4
    for key, layer in back.layers.items():
        assert torch.allclose(layer.scaling * layer.b @ layer.a, moves[key], atol=1e-4), key
    # A second import would start another basis under the served one: refused.
    assert main([*argv, "--task", "moves", "--task", "borrows"]) == 2
    assert "a basis exists already" in capsys.readouterr().err


def _runtime(settings):  # type: ignore[no-untyped-def]
    from service.compose import load_runtime

    return load_runtime(settings)


def test_import_without_activate_leaves_candidates_the_next_night_builds_on(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _peft_adapter(env / "moves", seed=3)
    assert main(["adapters", "import", str(env / "moves")]) == 0  # the task is named after the folder
    assert "moves@v1 candidate" in capsys.readouterr().out
    db = Database(get_settings().db_url)
    try:
        with db.session() as s:
            assert [(r.task, r.status) for r in AdapterRepository(s).versions()] == [("moves", "candidate")]
            assert RouteStateRepository(s).get().basis_id is None  # nothing served yet
            assert BasisRepository(s).latest() is not None  # ...but the night's Phase 2 basis exists
    finally:
        db.dispose()


def test_import_refuses_bad_input_clearly(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _peft_adapter(env / "a", seed=4)
    (env / "empty").mkdir()
    cases = [
        (["adapters", "import", str(env / "a"), "--task", "x", "--task", "y"], "2 --task names"),
        (["adapters", "import", str(env / "empty")], "not a PEFT adapter folder"),
        (["adapters", "import", str(env / "a"), "--task", "../etc"], "invalid task name"),
        (["adapters", "import", str(env / "a"), str(env / "a"), "--task", "t", "--task", "t"], "distinct"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    db = Database(get_settings().db_url)
    try:
        with db.session() as s:
            assert BasisRepository(s).latest() is None and not AdapterRepository(s).versions()
    finally:
        db.dispose()
