"""Activation checkpointing for training (learner.share.checkpoint) on the tiny Qwen2: the same gradients and
the same trained adapters as without it, a fraction of the saved activations, the model left as it came."""

from __future__ import annotations

import pytest
import torch

from learner.share.checkpoint import checkpointed, decoder_layers
from learner.share.examples import collate, encode_example
from learner.share.layer import attach_share
from learner.share.phases import CoefficientTrainer, Phase2Config, phase1, phase2
from learner.share.seeds import SeedConfig, train_lora_seed
from tests.helpers import random_seed

pytestmark = pytest.mark.usefixtures("one_thread")


def examples(count: int = 4) -> list[tuple[list[dict[str, str]], str]]:
    return [
        (
            [{"role": "user", "content": f"fix the borrow in case {i}: let t = s; use(s);"}],
            "let t = s.clone();",
        )
        for i in range(count)
    ]


def saved_bytes(fn) -> tuple[int, torch.Tensor]:  # type: ignore[no-untyped-def]
    """Bytes autograd saves for backward while ``fn`` builds the graph (what checkpointing cuts)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    return total, loss


def test_phase2_gradients_match_and_far_fewer_activations_are_saved(
    fresh_tiny_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    from learner.share import checkpoint

    monkeypatch.setattr(checkpoint, "HEAD_CHUNK_TOKENS", 4)  # the output layer in chunks too (frozen head)
    model, tokenizer = fresh_tiny_model
    result = phase1([random_seed(model, f"s{i}", i) for i in range(3)], threshold=1.0)
    attach_share(model, result.bases)
    trainer = CoefficientTrainer(model, result.bases, pseudo_rank=2, seed=0)
    batch = collate([encode_example(tokenizer, *e, max_length=128) for e in examples(2)], 0, "cpu")
    flags = [p.requires_grad for p in model.parameters()]

    plain_bytes, loss = saved_bytes(lambda: trainer.loss(batch))
    loss.backward()
    plain = [p.grad.clone() for p in trainer.parameters()]  # type: ignore[union-attr]
    for p in trainer.parameters():
        p.grad = None

    with checkpointed(model):
        ckpt_bytes, loss2 = saved_bytes(lambda: trainer.loss(batch))
        # backward runs after the loss left its route context and ``frozen``: the recomputation restores both
        loss2.backward()
    assert torch.equal(loss2.detach(), loss.detach())
    for p, want in zip(trainer.parameters(), plain, strict=True):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
        assert torch.allclose(p.grad, want, rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())  # the frozen base collected nothing
    assert [p.requires_grad for p in model.parameters()] == flags
    assert ckpt_bytes < 0.5 * plain_bytes, (ckpt_bytes, plain_bytes)
    assert all("forward" not in vars(layer) for layer in decoder_layers(model))


@pytest.mark.slow
def test_checkpointed_training_gives_the_same_lora_seed_and_phase2_coefficients(fresh_tiny_model) -> None:
    model, tokenizer = fresh_tiny_model
    seeds = {}
    for on in (False, True):
        config = SeedConfig(
            rank=4, steps=4, learning_rate=1e-2, batch_size=2, progress=False, gradient_checkpointing=on
        )
        seeds[on] = train_lora_seed(model, tokenizer, examples(), "borrow", config)
    assert seeds[True].losses == pytest.approx(seeds[False].losses, rel=1e-5)
    for key, layer in seeds[False].seed.layers.items():
        got = seeds[True].seed.layers[key]
        assert torch.allclose(got.a, layer.a, atol=1e-6) and torch.allclose(got.b, layer.b, atol=1e-6), key

    bank = attach_share(
        model, phase1([random_seed(model, f"s{i}", i) for i in range(3)], threshold=1.0).bases
    )
    learned = {
        on: phase2(
            model,
            tokenizer,
            bank,
            examples(),
            Phase2Config(
                steps=4, learning_rate=5e-2, batch_size=2, progress=False, gradient_checkpointing=on
            ),
        )
        for on in (False, True)
    }
    assert learned[True].losses == pytest.approx(learned[False].losses, rel=1e-5)
    for key, coeffs in learned[False].coeffs.items():
        assert torch.allclose(learned[True].coeffs[key].eb, coeffs.eb, atol=1e-6), key
        assert torch.allclose(learned[True].coeffs[key].ea, coeffs.ea, atol=1e-6), key


def test_checkpointing_leaves_evaluation_alone_and_refuses_nesting(tiny_model) -> None:
    model, _ = tiny_model
    ids = torch.randint(0, model.config.vocab_size, (1, 8))
    with torch.no_grad():
        before = model(ids).logits
    with checkpointed(model):
        with torch.no_grad():
            assert torch.equal(model(ids).logits, before)
        with pytest.raises(RuntimeError, match="already patched"), checkpointed(model):
            pass
    assert all("forward" not in vars(layer) for layer in decoder_layers(model))
    with checkpointed(model, enabled=False):
        assert all("forward" not in vars(layer) for layer in decoder_layers(model))
