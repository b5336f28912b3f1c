"""The frozen-prefix cache (learner.share.prefix) against the full forward on the tiny Qwen2: same logits and
losses with the plain model, a PEFT LoRA and routed Share layers in the suffix; training through it learns; a
changed prefix weight is refused."""

from __future__ import annotations

import pytest
import torch

from learner import routing
from learner.share.examples import collate, encode_example, pad_token_id
from learner.share.layer import attach_share, find_target_layers
from learner.share.math import LoraSeed, SeedLayer
from learner.share.phases import Phase2Config, phase1, phase2
from learner.share.prefix import FrozenPrefix
from learner.share.seeds import SeedConfig, train_lora_seed

MESSAGES = [{"role": "user", "content": "fix: let x = 5; x = 6;"}]


def _encoded(tokenizer, answer: str = "let mut x = 5; x = 6;"):
    return encode_example(tokenizer, MESSAGES, answer, 256)


def _suffix_seed(model, start: int, seed: int) -> LoraSeed:
    g = torch.Generator().manual_seed(seed)
    layers = {
        key: SeedLayer(
            a=torch.randn(4, lin.in_features, generator=g) * 0.3,
            b=torch.randn(lin.out_features, 4, generator=g) * 0.3,
            scaling=2.0,
        )
        for key, lin in find_target_layers(model, ["q_proj", "v_proj"]).items()
        if f"layers.{start}." in key
    }
    return LoraSeed(name=f"s{seed}", layers=layers)


def test_suffix_logits_equal_the_full_forward(fresh_tiny_model) -> None:
    model, tokenizer = fresh_tiny_model
    model.eval()
    example = _encoded(tokenizer)
    ids = torch.tensor([example.input_ids])
    prefix = FrozenPrefix(model, 1)
    with torch.no_grad():
        full = model(input_ids=ids).logits[0, -7:]
        cut = prefix.logits(model, example.input_ids, 7)[0]
        again = prefix.logits(model, example.input_ids, 7)[0]
    assert full.abs().max() > 0
    torch.testing.assert_close(cut, full, atol=1e-5, rtol=1e-5)
    assert torch.equal(cut, again)
    assert prefix.stats()["hits"] == 1 and prefix.stats()["misses"] == 1
    assert len(model.model.layers) == model.config.num_hidden_layers  # the cut is undone


def test_loss_matches_the_padded_batch_loss_with_routed_share_layers(fresh_tiny_model) -> None:
    model, tokenizer = fresh_tiny_model
    model.eval()
    prefix = FrozenPrefix(model, 1)
    batch = [_encoded(tokenizer), _encoded(tokenizer, "let mut x: i32 = 5;\nx = 6;")]
    result = phase1([_suffix_seed(model, 1, i) for i in range(2)], threshold=1.0)
    bank = attach_share(model, result.bases)
    bank.set_task("s0", result.coefficients["s0"], version=1)
    snap = bank.snapshot()
    padded = collate(batch, pad_token_id(tokenizer), "cpu")
    with torch.no_grad():
        base_loss = model(**padded).loss
        with routing.routed(snap.rows(["s0", "s0"]), snap):
            full = model(**padded).loss
        row = snap.rows(["s0"])
        cut = prefix.loss(model, batch, lambda: routing.routed(row, snap))
    assert abs(float(full) - float(base_loss)) > 1e-4  # the task's coefficients really act in the suffix
    assert abs(float(cut) - float(full)) < 1e-5


def test_lora_training_through_the_cache_learns_and_matches_the_full_path(fresh_tiny_model) -> None:
    model, tokenizer = fresh_tiny_model
    examples = [(MESSAGES, "let mut x = 5; x = 6;")] * 4
    names = [k for k in find_target_layers(model, ["q_proj", "v_proj"]) if "layers.1." in k]
    config = SeedConfig(
        rank=4,
        alpha=8,
        target_modules=[n.removeprefix("model.") for n in names],
        steps=6,
        learning_rate=5e-2,
        batch_size=2,
        max_length=256,
        progress=False,
    )
    prefix = FrozenPrefix(model, 1)
    cached = train_lora_seed(model, tokenizer, examples, "cached", config, prefix=prefix)
    full = train_lora_seed(model, tokenizer, examples, "full", config)
    assert cached.losses[-1] < 0.8 * cached.losses[0]
    assert cached.losses == pytest.approx(full.losses, rel=1e-3, abs=1e-4)
    assert set(cached.seed.layers) == set(full.seed.layers)
    assert prefix.stats()["misses"] == 1  # four copies of one example: one prefix pass


def test_phase2_through_the_cache_matches_the_full_path(fresh_tiny_model) -> None:
    model, tokenizer = fresh_tiny_model
    result = phase1([_suffix_seed(model, 1, i) for i in range(2)], threshold=1.0)
    bank = attach_share(model, result.bases)
    examples = [(MESSAGES, "let mut x = 5; x = 6;"), (MESSAGES, "let mut x: i32 = 5;")]
    cfg = Phase2Config(steps=4, learning_rate=5e-2, batch_size=2, progress=False)
    cached = phase2(model, tokenizer, bank, examples, cfg, prefix=FrozenPrefix(model, 1))
    full = phase2(model, tokenizer, bank, examples, cfg)
    assert cached.losses == pytest.approx(full.losses, rel=1e-3, abs=1e-4)


def test_adapters_below_the_start_and_changed_prefix_weights_are_refused(fresh_tiny_model) -> None:
    model, tokenizer = fresh_tiny_model
    prefix = FrozenPrefix(model, 1)
    with pytest.raises(ValueError, match="not in a layer"):
        prefix.require_suffix(["model.layers.0.self_attn.q_proj"])
    prefix.require_suffix(["model.layers.1.self_attn.q_proj"])
    config = SeedConfig(rank=2, target_modules=["q_proj"], steps=1, progress=False)
    with pytest.raises(ValueError, match="not in a layer"):
        train_lora_seed(model, tokenizer, [(MESSAGES, "x")], "all-layers", config, prefix=prefix)
    assert all(not type(m).__name__.startswith("Lora") for m in model.modules())  # unloaded again
    prefix.check()
    with torch.no_grad():
        model.model.layers[1].self_attn.q_proj.weight.add_(1.0)  # a suffix change is fine
    prefix.check()
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.add_(1.0)
    with pytest.raises(RuntimeError, match="below layer 1 changed"):
        prefix.check()
    with pytest.raises(ValueError, match="start layer"):
        FrozenPrefix(model, 2)
