"""Edit-weighted loss (learner/share/examples.py) with the tiny model's real tokenizer and forward pass."""

from __future__ import annotations

import pytest
import torch

from learner.share.examples import (
    IGNORE_INDEX,
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
