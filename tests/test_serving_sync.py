"""The database → Share bank sync: the service computes the desired task → version mapping from SQL and the
bank reconciles itself to it (``ShareBank.reconcile``), on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import torch

from agent.sandbox import Sandbox, SandboxConfig
from learner.runtime import ModelRuntime
from learner.share.artifacts import load_task_version, save_task_version
from learner.share.math import TaskCoefficients
from service.db.repositories import AdapterRepository, RouteStateRepository
from service.db.session import Database
from service.serving import ServingRuntime
from tests.helpers import install_version, make_settings


def _promote_scaled(db: Database, tmp: Path, task: str, version: int, factor: float) -> None:
    """Version ``version`` of ``task``: version 1's coefficients times ``factor``, promoted in SQL."""
    with db.session() as s:
        repo = AdapterRepository(s)
        first = repo.get(task, 1)
        assert first is not None
        v1 = load_task_version(first.path)
        coeffs = {k: TaskCoefficients(c.eb * factor, c.ea * factor) for k, c in v1.coeffs.items()}
        path = save_task_version(
            tmp, task=task, version=version, coeffs_by_layer=coeffs, basis_id=first.basis_id
        )
        row = repo.add(
            task=task,
            version=version,
            status="candidate",
            path=str(path),
            basis_id=first.basis_id,
            base_model_id="tiny",
        )
        repo.promote(row)
        RouteStateRepository(s).bump()


def test_sync_reconciles_the_bank_to_the_databases_active_versions(
    db_url: str, tmp_path: Path, tiny_model_dir: Path, fresh_tiny_model
) -> None:
    task, _ = install_version(db_url, tmp_path)
    model, tokenizer = fresh_tiny_model
    runtime = ModelRuntime(model, tokenizer, model_id="tiny")
    db = Database(db_url)
    settings = make_settings(tmp_path, tiny_model_dir)
    sandbox = Sandbox(SandboxConfig(cache_dir=tmp_path / "sandbox-cache"))
    serving = ServingRuntime(settings, db, sandbox, lambda: runtime)
    try:
        serving.load()
        assert serving.model_error is None
        assert serving.active_versions() == {task: 1} and runtime.bank is serving.bank
        first = serving.pinned_snapshot()
        assert first is not None and first.rows_for([(task, 1)]) == [first.index(task)]
        assert serving.sync() is False and serving.pinned_snapshot() is first  # same epoch: nothing to do

        _promote_scaled(db, tmp_path, task, 2, factor=2.0)
        assert serving.sync() is True
        assert serving.active_versions() == {task: 2}
        v1 = load_task_version(tmp_path / f"{task}@v1.safetensors").coeffs
        served = serving.bank.coefficients(task) if serving.bank is not None else {}
        assert all(torch.allclose(served[k].eb, 2.0 * c.eb) for k, c in v1.items())
        assert first.versions == {task: 1}  # a request pinned on the old snapshot keeps v1

        with db.session() as s:
            back = AdapterRepository(s).rollback(task)  # bumps the epoch
            assert back is not None and back.version == 1
        assert serving.sync() is True and serving.active_versions() == {task: 1}

        with db.session() as s:  # no active version left: the base model serves the task
            active = AdapterRepository(s).active_for(task)
            assert active is not None
            active.status = "retired"
            RouteStateRepository(s).bump()
        assert serving.sync() is True and serving.active_versions() == {}
        assert serving.bank is not None and serving.bank.tasks() == {}
    finally:
        db.dispose()
