"""Share artifacts on disk: safetensors files whose metadata says what they are and what they belong to.

Three kinds: LoRA seeds (Phase 1 input), bases (one file per basis set, shared by all tasks) and task
versions (one small file per task version: a few KB). A task version records the fingerprint of the basis
it was computed in and the base model id, and loading checks both: coefficients are meaningless in any
other basis, and applying them there would silently serve garbage.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from learner.share.bank import basis_fingerprint
from learner.share.math import LayerBasis, LoraSeed, SeedLayer, TaskCoefficients

SEED_FORMAT = "dreamfix-lora-seed/1"
BASES_FORMAT = "dreamfix-share-bases/1"
TASK_FORMAT = "dreamfix-share-task/1"

_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")


class ArtifactError(ValueError):
    """A file that is not the artifact asked for, is damaged, or belongs to another basis/model."""


def check_task_name(task: str) -> str:
    """Task names become file and folder names (``E0382@v7``): letters, digits, ``_ . + -`` only."""
    if not isinstance(task, str) or not _TASK_NAME.fullmatch(task) or ".." in task:
        raise ValueError(f"invalid task name {task!r}: use letters, digits and _ . + - (max 128)")
    return task


def task_version_name(task: str, version: int) -> str:
    return f"{check_task_name(task)}@v{int(version)}"


@dataclass(frozen=True)
class TaskVersion:
    task: str
    version: int
    coeffs: dict[str, TaskCoefficients]
    basis_id: str
    base_model_id: str | None

    @property
    def p(self) -> int:
        return next(iter(self.coeffs.values())).p


@dataclass(frozen=True)
class BasisSet:
    bases: dict[str, LayerBasis]
    basis_id: str
    base_model_id: str | None


# ---------------------------------------------------------------------------------------------- seeds
def save_seed(path: str | Path, seed: LoraSeed) -> Path:
    tensors: dict[str, torch.Tensor] = {}
    for key, layer in seed.layers.items():
        tensors[f"{key}::A"] = _cpu32(layer.a)
        tensors[f"{key}::B"] = _cpu32(layer.b)
    meta = {
        "format": SEED_FORMAT,
        "name": seed.name,
        "base_model_id": seed.base_model_id or "",
        "scalings": json.dumps({k: layer.scaling for k, layer in seed.layers.items()}),
    }
    return _write(path, tensors, meta)


def load_seed(path: str | Path) -> LoraSeed:
    tensors, meta = _read(path, SEED_FORMAT)
    with _malformed(path):
        scalings = json.loads(meta["scalings"])
        layers = {
            key: SeedLayer(a=tensors[f"{key}::A"], b=tensors[f"{key}::B"], scaling=float(s))
            for key, s in scalings.items()
        }
        return LoraSeed(name=meta["name"], layers=layers, base_model_id=meta["base_model_id"] or None)


# ---------------------------------------------------------------------------------------------- bases
def save_bases(path: str | Path, bases: Mapping[str, LayerBasis], base_model_id: str | None = None) -> str:
    """Write a basis set; returns its fingerprint (the ``basis_id`` task versions refer to)."""
    tensors: dict[str, torch.Tensor] = {}
    for key, basis in bases.items():
        tensors[f"{key}::beta"] = _cpu32(basis.beta)
        tensors[f"{key}::alpha"] = _cpu32(basis.alpha)
    basis_id = basis_fingerprint(bases)
    meta = {
        "format": BASES_FORMAT,
        "basis_id": basis_id,
        "base_model_id": base_model_id or "",
        "scalings": json.dumps({k: b.scaling for k, b in bases.items()}),
    }
    _write(path, tensors, meta)
    return basis_id


def load_bases(path: str | Path) -> BasisSet:
    tensors, meta = _read(path, BASES_FORMAT)
    with _malformed(path):
        scalings = json.loads(meta["scalings"])
        bases = {
            key: LayerBasis(beta=tensors[f"{key}::beta"], alpha=tensors[f"{key}::alpha"], scaling=float(s))
            for key, s in scalings.items()
        }
    basis_id = basis_fingerprint(bases)
    if basis_id != meta["basis_id"]:
        raise ArtifactError(f"{path}: basis content does not match its recorded id (damaged file?)")
    return BasisSet(bases=bases, basis_id=basis_id, base_model_id=meta["base_model_id"] or None)


# ---------------------------------------------------------------------------------------------- tasks
def save_task_version(
    path: str | Path,
    *,
    task: str,
    version: int,
    coeffs_by_layer: Mapping[str, TaskCoefficients],
    basis_id: str,
    base_model_id: str | None = None,
) -> Path:
    """Write one task version. ``path`` may be a directory: the file is then ``TASK@vN.safetensors``."""
    name = task_version_name(task, version)
    if not coeffs_by_layer:
        raise ValueError("no coefficients to save")
    ps = {c.p for c in coeffs_by_layer.values()}
    if len(ps) != 1:
        raise ValueError(f"every layer must use the same pseudo-rank p, got {sorted(ps)}")
    target = Path(path)
    if target.is_dir():
        target = target / f"{name}.safetensors"
    tensors: dict[str, torch.Tensor] = {}
    for key, c in coeffs_by_layer.items():
        tensors[f"{key}::eb"] = _cpu32(c.eb)
        tensors[f"{key}::ea"] = _cpu32(c.ea)
    meta = {
        "format": TASK_FORMAT,
        "task": task,
        "version": str(int(version)),
        "p": str(ps.pop()),
        "layers": json.dumps(sorted(coeffs_by_layer)),
        "basis_id": basis_id,
        "base_model_id": base_model_id or "",
    }
    return _write(target, tensors, meta)


def load_task_version(
    path: str | Path, *, expect_basis_id: str | None = None, expect_base_model_id: str | None = None
) -> TaskVersion:
    """Read one task version, refusing it when it was made for another basis or base model."""
    tensors, meta = _read(path, TASK_FORMAT)
    with _malformed(path):
        coeffs = {
            key: TaskCoefficients(eb=tensors[f"{key}::eb"], ea=tensors[f"{key}::ea"])
            for key in json.loads(meta["layers"])
        }
        task, version, basis_id = meta["task"], int(meta["version"]), meta["basis_id"]
    if expect_basis_id is not None and basis_id != expect_basis_id:
        raise ArtifactError(
            f"{path}: task {task}@v{version} was computed in basis {basis_id}, "
            f"not in the current basis {expect_basis_id}"
        )
    stored_model = meta["base_model_id"] or None
    if expect_base_model_id is not None and stored_model is not None and stored_model != expect_base_model_id:
        raise ArtifactError(f"{path}: made for base model {stored_model}, not {expect_base_model_id}")
    return TaskVersion(
        task=task, version=version, coeffs=coeffs, basis_id=basis_id, base_model_id=stored_model
    )


# ---------------------------------------------------------------------------------------------- helpers
def _cpu32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", torch.float32).contiguous()


def _write(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(target)  # readers never see a half-written artifact
    return target


def _read(path: str | Path, fmt: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    source = Path(path)
    if not source.is_file():
        raise ArtifactError(f"{source}: no such file")
    try:
        with safe_open(str(source), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
            if meta.get("format") != fmt:
                raise ArtifactError(f"{source}: not a {fmt} file (format {meta.get('format')!r})")
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{source}: unreadable safetensors file ({exc})") from None
    return tensors, meta


@contextmanager
def _malformed(path: str | Path) -> Iterator[None]:
    """Turn a missing key or bad metadata value into one clear ArtifactError."""
    try:
        yield
    except ArtifactError:
        raise
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"{path}: malformed artifact ({type(exc).__name__}: {exc})") from None
