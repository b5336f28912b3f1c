"""Share Phase 1/2/3, LoRA seeds and artifacts on the tiny Qwen2 (real PEFT, real training, real files)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from learner import routing
from learner.share.artifacts import (
    ArtifactError,
    load_bases,
    load_seed,
    load_task_version,
    save_bases,
    save_task_version,
)
from learner.share.bank import ShareBank
from learner.share.examples import IGNORE_INDEX, collate, encode_example
from learner.share.layer import attach_share, find_target_layers
from learner.share.math import LoraSeed, SeedLayer, TaskCoefficients, delta_weight
from learner.share.phases import (
    CoefficientTrainer,
    Phase2Config,
    Phase2Result,
    merge_bank,
    phase1,
    phase2,
)
from learner.share.seeds import SeedConfig, train_lora_seed

pytestmark = pytest.mark.usefixtures("one_thread")


def examples(kind: str, count: int = 6) -> list[tuple[list[dict[str, str]], str]]:
    answers = {"clone": "let t = s.clone();", "types": "let n: i32 = 5;"}
    return [([{"role": "user", "content": f"fix {kind} case {i}"}], answers[kind]) for i in range(count)]


def random_seed(
    model: torch.nn.Module, name: str, seed: int, rank: int = 4, scaling: float = 2.0
) -> LoraSeed:
    g = torch.Generator().manual_seed(seed)
    layers = {
        key: SeedLayer(
            a=torch.randn(rank, lin.in_features, generator=g) * 0.3,
            b=torch.randn(lin.out_features, rank, generator=g) * 0.3,
            scaling=scaling,
        )
        for key, lin in find_target_layers(model, ["q_proj", "v_proj"]).items()
    }
    return LoraSeed(name=name, layers=layers)


def logits(model: torch.nn.Module, ids: torch.Tensor, bank: ShareBank, task: str | None) -> torch.Tensor:
    snap = bank.snapshot()
    with torch.no_grad(), routing.routed(snap.rows([task] * ids.shape[0]), snap):
        return model(ids).logits


def test_examples_put_the_loss_on_the_answer_only(tiny_model) -> None:
    _, tokenizer = tiny_model
    messages, answer = examples("clone")[0]
    encoded = encode_example(tokenizer, messages, answer, max_length=512)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert encoded.input_ids[:n_prompt] == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert set(encoded.labels[:n_prompt]) == {IGNORE_INDEX}
    assert tokenizer.decode(encoded.labels[n_prompt:]) == answer + "<|im_end|>\n"
    n_answer = len(encoded.input_ids) - n_prompt
    short = encode_example(tokenizer, messages, answer, max_length=n_answer + 2)  # prompt start dropped
    assert (
        short.input_ids == encoded.input_ids[-(n_answer + 2) :]
        and short.labels[2:] == encoded.labels[n_prompt:]
    )
    tiny = encode_example(tokenizer, messages, answer, max_length=4)  # answer end cut, one prompt token kept
    assert tiny.input_ids == encoded.input_ids[n_prompt - 1 : n_prompt + 3] and tiny.labels[0] == IGNORE_INDEX
    with pytest.raises(ValueError, match="answer"):
        encode_example(tokenizer, messages, "", max_length=64)


@pytest.mark.slow
def test_lora_seed_training_learns_and_leaves_the_model_untouched(fresh_tiny_model, tmp_path: Path) -> None:
    model, tokenizer = fresh_tiny_model
    ids = torch.randint(0, model.config.vocab_size, (1, 8))
    with torch.no_grad():
        before = model(ids).logits
    flags = [p.requires_grad for p in model.parameters()]
    config = SeedConfig(
        rank=4, steps=12, learning_rate=1e-2, progress=False, checkpoint_dir=tmp_path, checkpoint_every=6
    )
    result = train_lora_seed(model, tokenizer, examples("clone"), "clone", config)
    assert result.losses[-1] < 0.7 * result.losses[0]
    assert set(result.seed.layers) == set(find_target_layers(model, ["q_proj", "v_proj"]))
    layer = result.seed.layers["model.layers.1.self_attn.v_proj"]
    assert layer.a.shape == (4, 64) and layer.b.shape == (32, 4) and layer.scaling == 16 / 4
    assert float(layer.b.abs().max()) > 0  # PEFT starts B at zero: it was trained
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not hasattr(model, "peft_config") or not model.peft_config
    assert [p.name for p in result.checkpoints] == [
        "clone-step00006.safetensors",
        "clone-step00012.safetensors",
    ]
    final = load_seed(result.checkpoints[-1])
    assert torch.equal(final.layers["model.layers.1.self_attn.v_proj"].b, layer.b)
    attach_share(model, phase1([result.seed], threshold=1.0).bases)
    with pytest.raises(ValueError, match="ShareLinear"):
        train_lora_seed(model, tokenizer, examples("clone"), "again", config)


def test_phase1_reconstructs_seeds_with_different_scalings(tiny_model) -> None:
    model, _ = tiny_model
    seeds = [random_seed(model, "a", 1, scaling=2.0), random_seed(model, "b", 2, rank=2, scaling=0.5)]
    result = phase1(seeds, threshold=1.0)
    for seed in seeds:
        for key, layer in seed.layers.items():
            want = layer.scaling * layer.b @ layer.a
            got = delta_weight(result.bases[key], result.coefficients[seed.name][key])
            assert torch.allclose(got, want, atol=1e-5), (seed.name, key)
    with pytest.raises(ValueError, match="unique"):
        phase1([seeds[0], seeds[0]])


def test_only_the_new_coefficients_and_phi_get_gradients(fresh_tiny_model) -> None:
    model, tokenizer = fresh_tiny_model
    result = phase1([random_seed(model, f"s{i}", i) for i in range(3)], threshold=1.0)
    attach_share(model, result.bases)
    trainer = CoefficientTrainer(model, result.bases, pseudo_rank=2, phi=1, seed=0)
    batch = collate([encode_example(tokenizer, *examples("clone")[0], max_length=128)], 0, "cpu")
    flags = [p.requires_grad for p in model.parameters()]
    assert any(flags)  # embeddings, MLPs... would collect gradients if not frozen during the step
    trainer.loss(batch).backward()
    trainable = trainer.parameters()
    assert len(trainable) == 4 * 4  # εβ, εα, φβ, φα for each of the 4 layers
    for param in trainable:
        assert param.grad is not None and float(param.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags  # frozen only during the step


@pytest.mark.slow
def test_phase2_learns_a_task_while_other_tasks_and_base_stay_bit_identical(fresh_tiny_model) -> None:
    model, tokenizer = fresh_tiny_model
    result = phase1([random_seed(model, f"s{i}", i) for i in range(3)], threshold=1.0)
    bank = attach_share(model, result.bases)
    bank.set_task("s0", result.coefficients["s0"], version=1)
    bank.set_task("s1", result.coefficients["s1"], version=1)
    ids = torch.randint(0, model.config.vocab_size, (2, 9))
    before = {task: logits(model, ids, bank, task) for task in ("s0", "s1", None)}

    learned = phase2(
        model, tokenizer, bank, examples("types"), Phase2Config(steps=30, learning_rate=5e-2, progress=False)
    )
    assert sum(learned.losses[-3:]) / 3 < 0.8 * learned.losses[0]
    for task, ref in before.items():
        assert torch.equal(logits(model, ids, bank, task), ref), task

    bank.set_task("types", learned.coeffs, version=1)
    for task, ref in before.items():
        assert torch.equal(logits(model, ids, bank, task), ref), task
    assert not torch.allclose(logits(model, ids, bank, "types"), before[None], atol=1e-3)


def test_phase3_preserves_earlier_tasks_when_the_span_allows(fresh_tiny_model) -> None:
    model, _ = fresh_tiny_model
    result = phase1([random_seed(model, f"s{i}", i) for i in range(3)], threshold=0.6)
    bank = attach_share(model, result.bases)
    for name in ("s0", "s1"):
        bank.set_task(name, result.coefficients[name], version=1)
    g = torch.Generator().manual_seed(5)
    new = Phase2Result(
        coeffs={
            k: TaskCoefficients(
                torch.randn(b.k_beta + 1, 1, generator=g), torch.randn(b.k_alpha + 1, 1, generator=g)
            )
            for k, b in bank.bases.items()
        },
        phi_beta={k: torch.randn(b.out_features, 1, generator=g) for k, b in bank.bases.items()},
        phi_alpha={k: torch.randn(b.in_features, 1, generator=g) for k, b in bank.bases.items()},
    )
    deltas = {
        name: {k: delta_weight(b, bank.coefficients(name)[k]) for k, b in bank.bases.items()}
        for name in ("s0", "s1")
    }
    deltas["new"] = {k: delta_weight(new.extended_basis(k, b), new.coeffs[k]) for k, b in bank.bases.items()}

    merged = merge_bank(bank, {"new": new}, threshold=1.0, cap=32)
    assert merged.report.worst() < 1e-5
    for name, per_layer in deltas.items():
        for key, want in per_layer.items():
            got = delta_weight(merged.bases[key], merged.coefficients[name][key])
            assert torch.allclose(got, want, atol=1e-4), (name, key)

    ids = torch.randint(0, model.config.vocab_size, (1, 9))
    s0_before = logits(model, ids, bank, "s0")
    bank.replace_bases(merged.bases, merged.coefficients, {"s0": 2, "s1": 2, "new": 1})
    assert bank.tasks() == {"s0": 2, "s1": 2, "new": 1}
    assert torch.allclose(logits(model, ids, bank, "s0"), s0_before, atol=1e-4)


def test_phase3_reports_the_error_when_the_cap_forces_compression(tiny_model) -> None:
    model, _ = tiny_model
    result = phase1([random_seed(model, f"s{i}", i) for i in range(4)], threshold=1.0)
    bank = ShareBank(result.bases)
    for name, coeffs in result.coefficients.items():
        bank.set_task(name, coeffs, version=1)
    merged = merge_bank(bank, threshold=1.0, cap=3)
    assert all(k == (3, 3) for k in merged.report.k_after.values())
    for name in result.coefficients:
        num = den = 0.0
        for key, basis in result.bases.items():
            want = delta_weight(basis, result.coefficients[name][key]).double()
            got = delta_weight(merged.bases[key], merged.coefficients[name][key]).double()
            num += float((got - want).norm() ** 2)
            den += float(want.norm() ** 2)
        assert merged.report.errors[name] == pytest.approx((num / den) ** 0.5, rel=1e-4)
        assert merged.report.errors[name] > 0.05


def test_task_versions_round_trip_and_refuse_another_basis(tiny_model, tmp_path: Path) -> None:
    model, _ = tiny_model
    result = phase1([random_seed(model, f"s{i}", i) for i in range(2)], threshold=1.0)
    other = phase1([random_seed(model, f"s{i}", i + 10) for i in range(2)], threshold=1.0)
    basis_id = save_bases(tmp_path / "bases.safetensors", result.bases, base_model_id="tiny")
    loaded = load_bases(tmp_path / "bases.safetensors")
    assert loaded.basis_id == basis_id == ShareBank(result.bases).basis_id != ShareBank(other.bases).basis_id
    path = save_task_version(
        tmp_path,
        task="E0382",
        version=3,
        coeffs_by_layer=result.coefficients["s0"],
        basis_id=basis_id,
        base_model_id="tiny",
    )
    assert path.name == "E0382@v3.safetensors" and path.stat().st_size < 10_000
    version = load_task_version(path, expect_basis_id=basis_id, expect_base_model_id="tiny")
    assert (version.task, version.version, version.p) == ("E0382", 3, 4)
    for key, c in result.coefficients["s0"].items():
        assert torch.equal(version.coeffs[key].eb, c.eb) and torch.equal(version.coeffs[key].ea, c.ea)
    with pytest.raises(ArtifactError, match="basis"):
        load_task_version(path, expect_basis_id=ShareBank(other.bases).basis_id)
    with pytest.raises(ArtifactError, match="base model"):
        load_task_version(path, expect_base_model_id="qwen-1.5b")
    with pytest.raises(ArtifactError, match="not a dreamfix-share-task"):
        load_task_version(tmp_path / "bases.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="unreadable"):
        load_task_version(tmp_path / "broken.safetensors")
