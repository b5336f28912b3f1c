"""Helpers the test modules share: settings for a throwaway daemon, waiting on its HTTP API, and a real
promoted Share coefficient version for the tiny model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import torch

from learner.share.artifacts import save_bases, save_task_version
from learner.share.layer import find_target_layers
from learner.share.math import LoraSeed, SeedLayer
from learner.share.phases import phase1
from learner.tiny import build_tiny_model
from service.db.repositories import AdapterRepository, BasisRepository, RouteStateRepository, RunRepository
from service.db.session import Database
from service.settings import Settings

TOKEN = "test-admin-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def random_seed(model: torch.nn.Module, name: str, seed: int, rank: int = 4) -> LoraSeed:
    """A seeded random rank-``rank`` LoRA seed on the model's q_proj/v_proj layers."""
    g = torch.Generator().manual_seed(seed)
    layers = {
        key: SeedLayer(
            a=torch.randn(rank, lin.in_features, generator=g) * 0.3,
            b=torch.randn(lin.out_features, rank, generator=g) * 0.3,
            scaling=2.0,
        )
        for key, lin in find_target_layers(model, ["q_proj", "v_proj"]).items()
    }
    return LoraSeed(name=name, layers=layers)


def make_settings(tmp: Path, model_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": tmp,
        # One sandbox result cache per test session: the koans' verdicts are the same in every test.
        "sandbox_cache": tmp.parent / "sandbox-cache",
        "model": str(model_dir),
        "admin_token": TOKEN,
        "scheduler": {"enabled": False},
        "agent": {"max_attempts": 1, "max_new_tokens": 16, "suggestions_first": True},
        "limits": {"max_body_bytes": 64 * 1024, "max_code_bytes": 16 * 1024, "queue_size": 32},
        "night": {
            "min_examples_per_task": 2,
            "seed_steps": 2,
            "generated_examples": 0,
            "eval_limit": 30,
            "max_length": 384,
            "heartbeat_s": 1.0,
            "tasks": ["moves", "mutability"],
            # tiny pools; the tiny model cannot show a gain, so the sign test is off here (alpha 1, no minimum
            # gain: promote unless a family regresses). tests/test_night.py runs the real gate.
            "self_samples": 0,
            "gate_pool": 6,
            "test_pool": 6,
            "gate_alpha": 1.0,
            "gate_min_net_gain": 0,
        },
        "share": {"train_steps": 2, "lora_rank": 2, "k_cap": 4},
        # one adapter per error family: the tests pin per-task mechanics (two tasks, a merge, routing apart)
        # with two small families; the default coarse grouping has its own tests (test_router, test_night)
        "router": {"grouping": "fine"},
    }
    base.update(overrides)
    return Settings(**base)


def run_night(services: Any) -> tuple[int, dict[str, Any], str]:
    """One night through ``services``' job runner; asserts it succeeded and returns its run's id, summary
    and log."""
    run_id = services.jobs.run_now("night")
    with services.db.session() as s:
        run = RunRepository(s).get(run_id)
        assert run is not None and run.status == "succeeded", run and run.error
        return run_id, run.summary, run.log


def succeeded_night(settings: Settings) -> tuple[dict[str, Any], str]:
    """One night of fresh services on a small eval and gate pool (2 koans, 3 problems): its run's summary
    and log (:func:`run_night`)."""
    from service.app_services import Services

    settings.night.eval_limit = 2
    settings.night.gate_pool = 3
    services = Services.build(settings)
    _, summary, log = run_night(services)
    services.stop()
    return summary, log


def short_night_env(data_dir: Path, model_dir: Path, admin_token: str, seed_steps: int) -> dict[str, str]:
    """Environment settings of a `python -m service serve` subprocess whose night is small and quick (one task,
    a few eval/gate/test problems, one short model attempt); the scheduler is off. ``seed_steps`` sets how long
    the night trains (long enough to be killed in the middle, where a test wants that)."""
    return {
        "DREAMFIX_DATA_DIR": str(data_dir),
        "DREAMFIX_MODEL": str(model_dir),
        "DREAMFIX_ADMIN_TOKEN": admin_token,
        "DREAMFIX_SCHEDULER__ENABLED": "false",
        "DREAMFIX_ROUTER__GROUPING": "fine",
        "DREAMFIX_NIGHT__TASKS": '["moves"]',
        "DREAMFIX_NIGHT__SEED_STEPS": str(seed_steps),
        "DREAMFIX_NIGHT__GENERATED_EXAMPLES": "0",
        "DREAMFIX_NIGHT__MIN_EXAMPLES_PER_TASK": "2",
        "DREAMFIX_NIGHT__HEARTBEAT_S": "1",
        "DREAMFIX_NIGHT__EVAL_LIMIT": "6",
        "DREAMFIX_NIGHT__GATE_POOL": "4",
        "DREAMFIX_NIGHT__TEST_POOL": "4",
        "DREAMFIX_NIGHT__SELF_SAMPLES": "0",
        "DREAMFIX_AGENT__MAX_NEW_TOKENS": "16",
        "DREAMFIX_AGENT__MAX_ATTEMPTS": "1",
    }


def wait_ready(client: httpx.Client, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"server never became ready: {client.get('/readyz').json()}")


def wait_run(client: httpx.Client, run_id: int, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/admin/runs/{run_id}", headers=AUTH).json()
        if run["status"] in ("succeeded", "failed"):
            return run  # type: ignore[no-any-return]
        time.sleep(0.25)
    raise AssertionError(f"run {run_id} did not finish")


def install_version(db_url: str, tmp: Path) -> tuple[str, int]:
    """A real basis and one task version for the tiny model's q_proj/v_proj, promoted in SQL."""
    model, _ = build_tiny_model(0)
    gen = torch.Generator().manual_seed(0)
    layers = {}
    for name, module in model.named_modules():
        if name.endswith(("q_proj", "v_proj")):
            n, d = module.weight.shape
            layers[name] = SeedLayer(
                a=torch.randn(2, d, generator=gen), b=torch.randn(n, 2, generator=gen), scaling=1.0
            )
    result = phase1([LoraSeed("moves", layers)], threshold=1.0, cap=4)
    basis_path = tmp / "basis.safetensors"
    basis_id = save_bases(basis_path, result.bases, "tiny")
    task_path = save_task_version(
        tmp, task="moves", version=1, coeffs_by_layer=result.coefficients["moves"], basis_id=basis_id
    )
    db = Database(db_url)
    with db.session() as s:
        BasisRepository(s).add(basis_id, str(basis_path), "tiny", {})
        repo = AdapterRepository(s)
        row = repo.add(
            task="moves",
            version=1,
            status="candidate",
            path=str(task_path),
            basis_id=basis_id,
            base_model_id="tiny",
        )
        repo.promote(row)
        RouteStateRepository(s).bump(basis_id=basis_id)
    db.dispose()
    return "moves", 1
