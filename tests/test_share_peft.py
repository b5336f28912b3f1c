"""PEFT interop: a Share task exported as a LoRA folder loads in PeftModel and computes what the routed
layer computes; PEFT adapters import as Phase 1 seeds with PEFT's own scaling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from learner import routing
from learner.share.artifacts import ArtifactError
from learner.share.layer import attach_share, detach_share
from learner.share.math import LoraSeed, SeedLayer
from learner.share.peft_io import export_peft, import_peft
from learner.share.phases import phase1
from learner.tiny import build_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def random_seeds(model: torch.nn.Module, count: int) -> list[LoraSeed]:
    g = torch.Generator().manual_seed(11)
    seeds = []
    for i in range(count):
        layers = {}
        for name, module in model.named_modules():
            if name.endswith(("q_proj", "v_proj")) and isinstance(module, torch.nn.Linear):
                layers[name] = SeedLayer(
                    a=torch.randn(4, module.in_features, generator=g) * 0.3,
                    b=torch.randn(module.out_features, 4, generator=g) * 0.3,
                    scaling=2.0,
                )
        seeds.append(LoraSeed(name=f"s{i}", layers=layers))
    return seeds


def test_exported_task_loads_in_peft_and_matches_the_routed_layer(fresh_tiny_model, tmp_path: Path) -> None:
    model, _ = fresh_tiny_model
    result = phase1(random_seeds(model, 3), threshold=0.6, cap=32)
    # A Phase-2-like task: random coefficients of pseudo-rank 2 in the bases.
    g = torch.Generator().manual_seed(12)
    coeffs = {
        k: type(c)(torch.randn(b.k_beta, 2, generator=g) * 0.5, torch.randn(b.k_alpha, 2, generator=g) * 0.5)
        for (k, b), c in zip(result.bases.items(), result.coefficients["s0"].values(), strict=True)
    }
    bank = attach_share(model, result.bases, base_model_id="tiny-qwen2-seed0")
    bank.set_task("E0382", coeffs, version=7)
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=g)
    snap = bank.snapshot()
    with torch.no_grad(), routing.routed(snap.rows(["E0382", "E0382"]), snap):
        routed = model(ids).logits

    folder = export_peft(
        tmp_path,
        task="E0382",
        version=7,
        bases=bank.bases,
        coeffs_by_layer=bank.coefficients("E0382"),
        base_model_id="tiny-qwen2-seed0",
        basis_id=bank.basis_id,
    )
    assert folder.name == "E0382@v7"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == 2 and config["lora_alpha"] == 2 and config["peft_type"] == "LORA"

    plain, _ = build_tiny_model(seed=0)
    with torch.no_grad():
        base = plain(ids).logits
    peft_model = PeftModel.from_pretrained(plain, str(folder))
    with torch.no_grad():
        via_peft = peft_model(ids).logits
        merged = peft_model.merge_and_unload()(ids).logits
    assert (via_peft - base).abs().max() > 1e-2  # the adapter really changes the output
    assert rel(routed, via_peft) <= 1e-5
    assert rel(routed, merged) <= 1e-5
    assert rel(routed - base, via_peft - base) <= 1e-4

    with pytest.raises(FileExistsError):
        export_peft(
            tmp_path, task="E0382", version=7, bases=bank.bases, coeffs_by_layer=bank.coefficients("E0382")
        )
    with pytest.raises(ValueError, match="invalid task name"):
        export_peft(
            tmp_path, task="../evil", version=1, bases=bank.bases, coeffs_by_layer=bank.coefficients("E0382")
        )


@pytest.mark.parametrize("use_rslora", [False, True])
def test_peft_adapter_imports_as_a_seed_with_its_delta(
    fresh_tiny_model, tmp_path: Path, use_rslora: bool
) -> None:
    model, _ = fresh_tiny_model
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        init_lora_weights=False,
        use_rslora=use_rslora,
        alpha_pattern={"v_proj": 2},
    )
    torch.manual_seed(13)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    expected = {
        name.removeprefix("base_model.model."): module.get_delta_weight("default").detach()
        for name, module in peft_model.named_modules()
        if hasattr(module, "get_delta_weight") and "default" in getattr(module, "lora_A", {})
    }
    seed = import_peft(tmp_path / "adapter", name="imported")
    assert seed.name == "imported" and set(seed.layers) == set(expected) and len(expected) == 4
    for key, layer in seed.layers.items():
        assert torch.allclose(layer.scaling * layer.b @ layer.a, expected[key], atol=1e-6), key
    assert (
        seed.layers["model.layers.0.self_attn.v_proj"].scaling
        != seed.layers["model.layers.0.self_attn.q_proj"].scaling
    )


def test_export_then_import_round_trips_the_task_delta(fresh_tiny_model, tmp_path: Path) -> None:
    model, _ = fresh_tiny_model
    result = phase1(random_seeds(model, 2), threshold=1.0)
    folder = export_peft(
        tmp_path, task="t", version=1, bases=result.bases, coeffs_by_layer=result.coefficients["s1"]
    )
    seed = import_peft(folder)
    original = random_seeds(model, 2)[1]
    for key, layer in seed.layers.items():
        want = original.layers[key].scaling * original.layers[key].b @ original.layers[key].a
        assert torch.allclose(layer.scaling * layer.b @ layer.a, want, atol=1e-4)


def test_import_rejects_what_is_not_plain_lora(tmp_path: Path, fresh_tiny_model) -> None:
    with pytest.raises(ArtifactError, match="not a PEFT adapter folder"):
        import_peft(tmp_path)
    model, _ = fresh_tiny_model
    dora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    dora.save_pretrained(str(tmp_path / "dora"))
    with pytest.raises(ArtifactError, match="DoRA"):
        import_peft(tmp_path / "dora")


@pytest.mark.real_model
@pytest.mark.slow
def test_on_the_default_model_the_routed_task_equals_its_peft_export(tmp_path: Path) -> None:
    """Real shapes (Qwen2.5 GQA: v_proj is 128 × 896): routed Share = the exported LoRA in PeftModel."""
    from transformers import AutoModelForCausalLM

    from learner.provision import default_cache_dir

    folder = default_cache_dir() / "qwen2.5-coder-0.5b-instruct"
    if not (folder / "config.json").is_file():
        pytest.skip("default model not provisioned (dreamfix model pull)")
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    # Deltas of a realistic size (still moving the logits by ~70 %): the tiny-model seeds' scale would swamp
    # the 0.5B model, and 24 layers of such chaos amplify float32 rounding to ~1e-3.
    seeds = [
        LoraSeed(s.name, {k: SeedLayer(a=f.a, b=0.05 * f.b, scaling=f.scaling) for k, f in s.layers.items()})
        for s in random_seeds(model, 2)
    ]
    result = phase1(seeds, threshold=0.6, cap=32)
    bank = attach_share(model, result.bases)
    bank.set_task("E0382", result.coefficients["s0"], version=1)
    ids = torch.randint(0, model.config.vocab_size, (1, 6), generator=torch.Generator().manual_seed(0))
    snap = bank.snapshot()
    with torch.no_grad(), routing.routed(snap.rows(["E0382"]), snap):
        routed = model(ids).logits
    export = export_peft(
        tmp_path, task="E0382", version=1, bases=bank.bases, coeffs_by_layer=bank.coefficients("E0382")
    )
    detach_share(model)
    with torch.no_grad():
        base = model(ids).logits
        via_peft = PeftModel.from_pretrained(model, str(export))(ids).logits
    assert (via_peft - base).abs().max() > 1e-3
    assert rel(routed, via_peft) <= 1e-5
