"""Adapter and basis artifacts in the database, so that every replica can load what any replica trained.

A task version (a few KB) and a basis (a few MB for the default model) are written to the database with
their sha256 when their row is added; a replica loading one takes it from its local cache
(``ADAPTERS_DIR/db-cache/SHA256.safetensors``) when the cached file still hashes right, else from the row,
and refuses bytes whose hash does not match (a damaged or tampered row): the replica keeps serving what it
served before. Rows from before migration 0003 carry no bytes and load from their ``path`` as before.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


class ArtifactIntegrityError(ValueError):
    """Stored artifact bytes whose sha256 is not the one recorded with them (no torch import here: the
    repositories use this module)."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def artifact_fields(path: str | Path | None) -> dict[str, Any]:
    """``{"artifact": bytes, "sha256": hex}`` for the file at ``path``; empty when there is no such file
    (a row whose artifact lives elsewhere keeps loading from its path)."""
    if not path:
        return {}
    try:
        data = Path(path).read_bytes()
    except OSError:
        return {}
    return {"artifact": data, "sha256": sha256_hex(data)}


def local_artifact(row: Any, cache_dir: Path, what: str) -> Path:
    """A local file holding ``row``'s verified artifact (an AdapterVersion or Basis row, read inside its
    session). Raises ArtifactIntegrityError when the stored bytes do not match the stored hash."""
    expected = row.sha256
    if expected is None:
        return Path(row.path)  # written before 0003: the file is the only copy
    cached = cache_dir / f"{expected}.safetensors"
    try:
        if sha256_hex(cached.read_bytes()) == expected:
            return cached
    except OSError:
        pass
    data = row.artifact
    if data is None:
        raise ArtifactIntegrityError(f"{what}: the database row records sha256 {expected} but holds no bytes")
    actual = sha256_hex(bytes(data))
    if actual != expected:
        raise ArtifactIntegrityError(
            f"{what}: stored artifact hashes to {actual}, not its recorded sha256 {expected} "
            "(damaged or tampered row); not loaded"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
    tmp.write_bytes(bytes(data))
    tmp.replace(cached)  # readers never see a half-written file
    return cached
