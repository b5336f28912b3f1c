"""Share task versions ↔ standard PEFT LoRA folders.

Export: any task version is a plain rank-p LoRA, B = s·β·εβ (n × p) and A = (α·εα)ᵀ (p × d), written as
``TASK@vN/`` with PEFT's ``adapter_config.json`` and ``adapter_model.safetensors`` (PEFT's key names, scaling
folded into B so lora_alpha = r). PEFT, vLLM and LoRAX can serve it without knowing about Share.

Import: a PEFT LoRA folder becomes a ``LoraSeed`` for Phase 1, with PEFT's per-layer scaling (lora_alpha/r,
or /√r for rsLoRA; rank_pattern/alpha_pattern honoured).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from learner.share.artifacts import ArtifactError, task_version_name
from learner.share.math import LayerBasis, LoraSeed, SeedLayer, TaskCoefficients, reconstruct

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
#: What an export writes: readable by every user (a serving process often runs as another user).
FILE_MODE, DIR_MODE = 0o644, 0o755
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<layer>.+)\.lora_(?P<side>[AB])(?:\.[^.]+)?\.weight$")


def lora_factors(basis: LayerBasis, coeffs: TaskCoefficients) -> tuple[torch.Tensor, torch.Tensor]:
    """The task as a plain LoRA with scaling 1: (B = s·β·εβ, A = (α·εα)ᵀ), computed in float64."""
    b, a = reconstruct(basis.to(dtype=torch.float64), coeffs.to(dtype=torch.float64))
    return (basis.scaling * b).float(), a.float()


def export_peft(
    out_dir: str | Path,
    *,
    task: str,
    version: int,
    bases: Mapping[str, LayerBasis],
    coeffs_by_layer: Mapping[str, TaskCoefficients],
    base_model_id: str | None = None,
    basis_id: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``out_dir/TASK@vN/`` as a PEFT LoRA folder; returns the folder."""
    folder = Path(out_dir) / task_version_name(task, version)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} exists; pass overwrite=True to replace it")
    if set(coeffs_by_layer) != set(bases):
        raise ValueError("coefficients and bases must cover the same layers")
    ps = {c.p for c in coeffs_by_layer.values()}
    if len(ps) != 1:
        raise ValueError(f"every layer must use the same pseudo-rank p, got {sorted(ps)}")
    p = ps.pop()
    tensors: dict[str, torch.Tensor] = {}
    for key, basis in bases.items():
        b, a = lora_factors(basis, coeffs_by_layer[key])
        tensors[f"base_model.model.{key}.lora_A.weight"] = a.contiguous()
        tensors[f"base_model.model.{key}.lora_B.weight"] = b.contiguous()
    config = lora_config(p, sorted(bases), base_model_id)
    staging = folder.with_name(folder.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    meta = {"format": "pt", "dreamfix_task": task, "dreamfix_version": str(version)}
    if basis_id:
        meta["dreamfix_basis_id"] = basis_id
    save_file(tensors, str(staging / WEIGHTS_FILE), metadata=meta)
    for path in (staging / CONFIG_FILE, staging / WEIGHTS_FILE):
        os.chmod(path, FILE_MODE)
    os.chmod(staging, DIR_MODE)
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return folder


def lora_config(r: int, target_modules: list[str], base_model_id: str | None) -> dict[str, Any]:
    """``adapter_config.json`` with only the standard LoRA fields every PEFT release since 0.13 (and vLLM,
    LoRAX) reads: writing ``LoraConfig.save_pretrained``'s output instead carries every field of the installed
    PEFT, which older releases refuse (``unexpected keyword argument``)."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_id,
        "revision": None,
        "inference_mode": True,
        "r": r,
        "lora_alpha": r,  # scaling 1: s is already folded into B
        "lora_dropout": 0.0,
        "target_modules": target_modules,  # full module names: exactly these layers, nothing else
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def upstream_model_id(spec: str | None, cache_dir: str | Path | None = None) -> str | None:
    """The Hugging Face id of the model a setting names (what ``base_model_name_or_path`` must hold for
    ``AutoPeftModelForCausalLM`` elsewhere): a known release's upstream, a provisioned folder's
    ``dreamfix-model.json`` ``upstream`` or ``config.json`` ``_name_or_path``, or the spec when it is an
    id already. None when nothing says."""
    from learner.provision import KNOWN_MODELS, PROVENANCE_FILE, default_cache_dir

    if not spec:
        return None
    release = KNOWN_MODELS.get(spec)
    if release is not None:
        first = release.upstream.split()[0]
        if _HUB_ID.match(first):
            return first
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    for folder in (Path(spec).expanduser(), cache / spec):
        for name, key in (
            (PROVENANCE_FILE, "upstream"),
            (PROVENANCE_FILE, "name"),
            ("config.json", "_name_or_path"),
        ):
            try:
                value = json.loads((folder / name).read_text()).get(key)
            except (OSError, ValueError, AttributeError):
                continue
            if key == "name" and isinstance(value, str) and value in KNOWN_MODELS and value != spec:
                return upstream_model_id(value, cache)  # a converted release in a folder of its own (Docker)
            if isinstance(value, str) and _HUB_ID.match(value) and not Path(value).exists():
                return value
    if _HUB_ID.match(spec) and not Path(spec).expanduser().exists():
        return spec
    return None


def import_peft(folder: str | Path, name: str | None = None) -> LoraSeed:
    """Read a PEFT LoRA folder as a Phase 1 seed. Only plain LoRA on linear layers is accepted."""
    root = Path(folder)
    config_path, weights_path = root / CONFIG_FILE, root / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise ArtifactError(f"{root}: not a PEFT adapter folder (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{config_path}: unreadable ({exc})") from None
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        raise ArtifactError(f"{root}: not a LoRA adapter (peft_type {config.get('peft_type')!r})")
    if config.get("use_dora"):
        raise ArtifactError(f"{root}: DoRA adapters are not plain LoRA and cannot seed Share")
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{weights_path}: unreadable ({exc})") from None
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in weights.items():
        match = _KEY.match(key)
        if match is None:
            raise ArtifactError(f"{root}: unsupported tensor {key!r} (only lora_A/lora_B of linear layers)")
        factors.setdefault(match["layer"], {})[match["side"]] = tensor.to(torch.float32)
    if not factors:
        raise ArtifactError(f"{root}: the adapter holds no LoRA weights")
    layers: dict[str, SeedLayer] = {}
    for layer, pair in sorted(factors.items()):
        if set(pair) != {"A", "B"}:
            raise ArtifactError(f"{root}: layer {layer} lacks lora_{'A' if 'A' not in pair else 'B'}")
        rank = int(pair["A"].shape[0])
        alpha = float(_pattern_value(config.get("alpha_pattern") or {}, layer, config.get("lora_alpha", 8)))
        denominator = rank**0.5 if config.get("use_rslora") else rank
        try:
            layers[layer] = SeedLayer(a=pair["A"], b=pair["B"], scaling=alpha / denominator)
        except ValueError as exc:
            raise ArtifactError(f"{root}: layer {layer}: {exc}") from None
    return LoraSeed(
        name=name or root.name, layers=layers, base_model_id=config.get("base_model_name_or_path") or None
    )


def _pattern_value(patterns: Mapping[str, float], layer: str, default: float) -> float:
    """PEFT's per-layer override lookup: a pattern matches the layer name or a dotted suffix of it."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", layer):
            return value
    return default
