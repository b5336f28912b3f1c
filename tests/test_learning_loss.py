"""Edit-weighted loss and the answer-positions-only LM loss (learner/share/examples.py) with the tiny model's
real tokenizer and forward pass."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from agent.prompt import format_program_answer
from learner.share.examples import (
    IGNORE_INDEX,
    EncodedExample,
    collate,
    collate_weights,
    copied_line_mask,
    encode_example,
    pad_token_id,
    weighted_lm_loss,
)

BROKEN = 'fn main() {\n    let x: i32 = "one";\n    println!("{}", x);\n}\n'
FIXED_REPLY = '```rust\nfn main() {\n    let x: i32 = 1;\n    println!("{}", x);\n}\n```'
MESSAGES = [{"role": "user", "content": f"Fix this program:\n```rust\n{BROKEN}```"}]


def test_copied_line_mask_marks_only_unchanged_lines() -> None:
    mask = copied_line_mask("a\nb2\nc\n", "a\nb\nc\n")
    assert mask == [True, True, False, False, False, True, True]


def test_changed_line_gets_full_weight_copied_lines_get_copy_weight(tiny_model) -> None:
    _, tokenizer = tiny_model
    enc = encode_example(tokenizer, MESSAGES, FIXED_REPLY, 512, source=BROKEN, copy_weight=0.0)
    assert enc.weights is not None and len(enc.weights) == len(enc.input_ids)
    answer = [
        (t, w)
        for t, w, lab in zip(enc.input_ids, enc.weights, enc.labels, strict=True)
        if lab != IGNORE_INDEX
    ]
    weighted = tokenizer.decode([t for t, w in answer if w == 1.0])
    masked = tokenizer.decode([t for t, w in answer if w == 0.0])
    assert "= 1;" in weighted  # the edit carries the loss
    assert "println" in masked and "println" not in weighted  # a copied line does not
    assert all(w == 0.0 for w, lab in zip(enc.weights, enc.labels, strict=True) if lab == IGNORE_INDEX)
    plain = encode_example(tokenizer, MESSAGES, FIXED_REPLY, 512)
    assert plain.weights is None and plain.input_ids == enc.input_ids


def test_weighted_loss_uniform_equals_model_loss_and_masking_changes_it(tiny_model) -> None:
    model, tokenizer = tiny_model
    pad = pad_token_id(tokenizer)
    enc = encode_example(tokenizer, MESSAGES, FIXED_REPLY, 512, source=BROKEN, copy_weight=0.0)
    plain = encode_example(tokenizer, MESSAGES, FIXED_REPLY, 512)
    batch = collate([plain], pad, "cpu")
    with torch.no_grad():
        out = model(**batch)
        uniform = weighted_lm_loss(out.logits, batch["labels"], collate_weights([plain], "cpu"))
        edit = weighted_lm_loss(out.logits, batch["labels"], collate_weights([enc], "cpu"))
    assert float(uniform) == pytest.approx(float(out.loss), rel=1e-4)
    # the edit-weighted loss is the mean NLL over the changed-line tokens only
    logits, labels = out.logits[0, :-1], batch["labels"][0, 1:]
    nll = torch.nn.functional.cross_entropy(
        logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="none"
    )
    keep = torch.tensor(enc.weights[1:]) == 1.0
    assert 0 < int(keep.sum()) < int((labels != IGNORE_INDEX).sum())
    assert float(edit) == pytest.approx(float(nll[keep].mean()), rel=1e-5)


def test_copy_weight_out_of_range_is_refused(tiny_model) -> None:
    _, tokenizer = tiny_model
    with pytest.raises(ValueError):
        encode_example(tokenizer, MESSAGES, FIXED_REPLY, 512, source=BROKEN, copy_weight=1.5)


def test_phase2_trains_with_the_edit_weighted_loss(fresh_tiny_model) -> None:
    """Phase2Config.copy_weight reaches the trainer: the first loss is the edit-token NLL, not the plain one."""
    from learner.share.layer import attach_share, find_target_layers
    from learner.share.math import LoraSeed, SeedLayer
    from learner.share.phases import Phase2Config, phase1, phase2

    model, tokenizer = fresh_tiny_model
    g = torch.Generator().manual_seed(0)
    seeds = [
        LoraSeed(
            name=f"s{i}",
            layers={
                key: SeedLayer(
                    a=torch.randn(2, lin.in_features, generator=g) * 0.3,
                    b=torch.randn(lin.out_features, 2, generator=g) * 0.3,
                    scaling=2.0,
                )
                for key, lin in find_target_layers(model, ["q_proj", "v_proj"]).items()
            },
        )
        for i in range(2)
    ]
    bank = attach_share(model, phase1(seeds, threshold=1.0).bases)
    data = [(MESSAGES, FIXED_REPLY)] * 2
    cfg = dict(steps=3, learning_rate=5e-2, progress=False, batch_size=2)
    plain = phase2(model, tokenizer, bank, data, Phase2Config(**cfg), task="a")
    edit = phase2(model, tokenizer, bank, data, Phase2Config(**cfg, copy_weight=0.0), task="b")
    assert all(torch.isfinite(torch.tensor(x)) for x in edit.losses)
    assert edit.losses[0] != pytest.approx(plain.losses[0], rel=1e-6)


OTHER_BROKEN = 'fn main() {\n    let v = vec![1];\n    let w = v;\n    println!("{:?}", v);\n}\n'
OTHER_REPLY = "Borrow it.\n" + format_program_answer(OTHER_BROKEN.replace("= v;", "= &v;"))
OTHER_MESSAGES = [{"role": "user", "content": f"Fix this program:\n```rust\n{OTHER_BROKEN}```"}]


def _two_examples(tokenizer: Any, copy_weight: float = 1.0) -> list[EncodedExample]:
    """Two examples of different lengths (the batch is padded), edit-weighted when copy_weight < 1."""
    return [
        encode_example(tokenizer, m, a, 512, source=m[0]["content"], copy_weight=copy_weight)
        for m, a in ((MESSAGES, FIXED_REPLY), (OTHER_MESSAGES, OTHER_REPLY))
    ]


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("copy_weight", [1.0, 0.25])
def test_answer_positions_loss_equals_the_full_logits_loss_and_its_gradients(
    fresh_tiny_model, copy_weight: float, checkpointing: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """answer_lm_loss runs the backbone and the output layer on the answer positions only; value and
    gradients equal the full-logits loss (the model's own for the plain loss, weighted_lm_loss else) — also
    under activation checkpointing, where the output layer runs in recomputed chunks (here of 4 tokens)."""
    from learner.share import checkpoint
    from learner.share.examples import answer_lm_loss

    monkeypatch.setattr(checkpoint, "HEAD_CHUNK_TOKENS", 4)

    model, tokenizer = fresh_tiny_model
    encoded = _two_examples(tokenizer, copy_weight)
    batch = collate(encoded, pad_token_id(tokenizer), "cpu")
    assert len(encoded[0].input_ids) != len(encoded[1].input_ids)
    weights = collate_weights(encoded, "cpu") if copy_weight != 1.0 else None
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(full: bool) -> tuple[float, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        if not full:
            with checkpoint.checkpointed(model, checkpointing):
                shapes, handle = _lm_head_rows(model)
                loss = answer_lm_loss(model, batch, weights)
                handle.remove()
            answer_tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            rows = [shape[0] for shape in shapes]
            assert sum(rows) == answer_tokens
            assert max(rows) <= 4 if checkpointing else rows == [answer_tokens]
        elif weights is None:
            loss = model(**batch).loss
        else:
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            loss = weighted_lm_loss(model(**inputs).logits, batch["labels"], weights)
        loss.backward()
        return float(loss.detach()), [
            p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params
        ]

    full_loss, full_grads = loss_and_grads(full=True)
    loss, grads = loss_and_grads(full=False)
    assert loss == pytest.approx(full_loss, abs=1e-5)
    for g_full, g in zip(full_grads, grads, strict=True):
        assert torch.allclose(g, g_full, atol=1e-6, rtol=1e-4)
    assert any(float(g.abs().sum()) > 0 for g in grads)


def _lm_head_rows(model: Any) -> tuple[list[tuple[int, ...]], Any]:
    shapes: list[tuple[int, ...]] = []
    handle = model.lm_head.register_forward_hook(lambda _m, args, _out: shapes.append(tuple(args[0].shape)))
    return shapes, handle


def test_lora_seeds_and_phase2_apply_the_output_layer_to_answer_tokens_only(fresh_tiny_model) -> None:
    """Both trainers compute the LM head only on the positions that predict answer tokens: a 2-d input of
    (answer tokens × hidden), never (batch × length × hidden)."""
    from learner.share.layer import attach_share
    from learner.share.phases import Phase2Config, phase1, phase2
    from learner.share.seeds import SeedConfig, train_lora_seed
    from tests.helpers import random_seed

    model, tokenizer = fresh_tiny_model
    data = [(MESSAGES, FIXED_REPLY), (OTHER_MESSAGES, OTHER_REPLY)]
    answer_tokens = sum(
        sum(1 for label in e.labels if label != IGNORE_INDEX) for e in _two_examples(tokenizer)
    )
    hidden = model.config.hidden_size
    shapes, handle = _lm_head_rows(model)
    try:
        train_lora_seed(
            model, tokenizer, data, "s", SeedConfig(rank=2, steps=2, batch_size=2, progress=False)
        )
        assert shapes == [(answer_tokens, hidden)] * 2
        shapes.clear()
        bank = attach_share(model, phase1([random_seed(model, "a", 0, rank=2)], threshold=1.0).bases)
        phase2(model, tokenizer, bank, data, Phase2Config(steps=2, batch_size=2, progress=False))
        assert shapes == [(answer_tokens, hidden)] * 2
    finally:
        handle.remove()


def test_lora_seeds_take_the_edit_weighted_loss_from_the_train_config(fresh_tiny_model) -> None:
    from learner.share.config import TrainConfig
    from learner.share.seeds import train_lora_seed

    model, tokenizer = fresh_tiny_model
    data = [(MESSAGES, FIXED_REPLY), (OTHER_MESSAGES, OTHER_REPLY)]
    train = TrainConfig(lora_rank=2, seed_steps=1, batch_size=2, copy_weight=0.0)
    assert train.seed_config().copy_weight == 0.0 == train.phase2_config().copy_weight
    plain = train_lora_seed(model, tokenizer, data, "p", train.with_(copy_weight=1.0).seed_config())
    edit = train_lora_seed(model, tokenizer, data, "e", train.seed_config())
    assert edit.losses[0] != pytest.approx(plain.losses[0], rel=1e-6)
