"""Adapter artifacts live in the database (migration 0003): a replica whose data folder is empty (another
host) loads the promoted version from its row, verified by sha256; a tampered row is refused and the
replica keeps serving what it served before."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sqlalchemy import update

from learner.runtime import ModelRuntime
from learner.share.artifacts import load_bases, save_task_version
from learner.share.math import TaskCoefficients
from service.compose import make_sandbox
from service.db.artifacts import ArtifactIntegrityError, local_artifact, sha256_hex
from service.db.models import AdapterVersion, Basis
from service.db.repositories import AdapterRepository, BasisRepository
from service.db.session import Database
from service.serving import ServingRuntime
from tests.helpers import install_version, make_settings


def _reader(tmp: Path, db_url: str, model_dir: Path, runtime: ModelRuntime) -> ServingRuntime:
    settings = make_settings(tmp / "reader", model_dir, database_url=db_url)
    assert not settings.adapters_dir.exists()  # nothing on this "host" but the database
    serving = ServingRuntime(settings, Database(db_url), make_sandbox(settings), lambda: runtime)
    serving.load()
    return serving


def _add_v2(db: Database, tmp: Path, *, tamper: bool) -> None:
    """Version 2 of ``moves`` in the served basis (v1's coefficients doubled), promoted; with ``tamper``
    its stored bytes are altered after the hash was recorded."""
    with db.session() as s:
        basis_row = BasisRepository(s).latest()
        assert basis_row is not None
        basis = load_bases(local_artifact(basis_row, tmp / "cache", "basis"))
    coeffs = {
        key: TaskCoefficients(eb=torch.ones(b.k_beta, 1) * 0.01, ea=torch.ones(b.k_alpha, 1) * 0.01)
        for key, b in basis.bases.items()
    }
    path = save_task_version(tmp, task="moves", version=2, coeffs_by_layer=coeffs, basis_id=basis.basis_id)
    with db.session() as s:
        repo = AdapterRepository(s)
        row = repo.add(
            task="moves", version=2, status="candidate", path=str(path), basis_id=basis.basis_id,
            base_model_id="tiny",
        )  # fmt: skip
        assert row.sha256 == sha256_hex(path.read_bytes())
        if tamper:
            data = bytearray(path.read_bytes())
            data[-1] ^= 0xFF
            s.execute(update(AdapterVersion).where(AdapterVersion.id == row.id).values(artifact=bytes(data)))
        repo.promote(row)
    path.unlink()


def test_a_replica_with_an_empty_data_dir_loads_the_promoted_version_from_the_database(
    db_url: str, tmp_path: Path, tiny_model_dir: Path, tiny_runtime: ModelRuntime
) -> None:
    writer = tmp_path / "writer"
    writer.mkdir()
    task, version = install_version(db_url, writer)
    shutil.rmtree(writer)  # the files stayed on the host that trained them
    serving = _reader(tmp_path, db_url, tiny_model_dir, tiny_runtime)
    try:
        assert serving.model_error is None
        assert serving.active_versions() == {task: version}
        with serving.db.session() as s:
            shas = {r.sha256 for r in s.query(AdapterVersion)} | {r.sha256 for r in s.query(Basis)}
        cache = serving.settings.adapters_dir / "db-cache"
        assert {p.name for p in cache.iterdir()} == {f"{sha}.safetensors" for sha in shas}
    finally:
        serving.db.dispose()


def test_a_tampered_row_is_refused_and_the_previous_version_keeps_serving(
    db_url: str, tmp_path: Path, tiny_model_dir: Path, tiny_runtime: ModelRuntime
) -> None:
    install_version(db_url, tmp_path)
    serving = _reader(tmp_path, db_url, tiny_model_dir, tiny_runtime)
    try:
        assert serving.active_versions() == {"moves": 1}
        epoch = serving.epoch
        _add_v2(serving.db, tmp_path, tamper=True)
        assert serving.sync() is False
        assert serving.active_versions() == {"moves": 1} and serving.epoch == epoch
        assert serving.sync_error is not None and "moves@v2" in serving.sync_error
        assert "not its recorded sha256" in serving.sync_error
        assert serving.sync() is False  # retried on every poll, still refused
        with serving.db.session() as s:  # the operator repairs the row (or rolls back): served at once
            row = AdapterRepository(s).get("moves", 2)
            assert row is not None and row.artifact is not None
            data = bytearray(row.artifact)
            data[-1] ^= 0xFF
            row.artifact = bytes(data)
        assert serving.sync() is True
        assert serving.active_versions() == {"moves": 2} and serving.sync_error is None
    finally:
        serving.db.dispose()


def test_a_damaged_cache_file_is_replaced_from_the_row_and_a_bad_row_raises(
    db_url: str, tmp_path: Path
) -> None:
    install_version(db_url, tmp_path)
    db = Database(db_url)
    try:
        with db.session() as s:
            row = AdapterRepository(s).get("moves", 1)
            assert row is not None and row.sha256 is not None
            cached = local_artifact(row, tmp_path / "cache", "moves@v1")
            cached.write_bytes(b"not the artifact")
            assert local_artifact(row, tmp_path / "cache", "moves@v1").read_bytes() == row.artifact
            cached.unlink()
            row.artifact = b"tampered"
            with pytest.raises(ArtifactIntegrityError, match="moves@v1: stored artifact hashes to"):
                local_artifact(row, tmp_path / "cache", "moves@v1")
            assert not cached.exists()
    finally:
        db.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_another_process_exports_from_the_database_and_refuses_a_tampered_row(
    postgres_url: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    writer = tmp_path / "writer"
    writer.mkdir()
    install_version(postgres_url, writer)
    shutil.rmtree(writer)
    env = {
        **os.environ,
        "DREAMFIX_DATABASE_URL": postgres_url,
        "DREAMFIX_DATA_DIR": str(tmp_path / "other-host"),
        "DREAMFIX_MODEL": str(tiny_model_dir),
    }
    cmd = [sys.executable, "-m", "service", "adapters", "export", "moves@v1", "--out", str(tmp_path / "out")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "moves@v1" / "adapter_model.safetensors").is_file()
    db = Database(postgres_url)
    with db.session() as s:
        s.execute(update(Basis).values(artifact=b"tampered"))
    db.dispose()
    shutil.rmtree(tmp_path / "other-host" / "adapters" / "db-cache")
    done = subprocess.run([*cmd, "--force"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "stored artifact hashes to" in done.stderr and "Traceback" not in done.stderr
