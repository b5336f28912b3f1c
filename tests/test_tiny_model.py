"""The tiny test model: fast, deterministic, and a faithful Qwen2 for everything the code does with models."""

from __future__ import annotations

import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM

from learner.tiny import IM_END, PAD_TOKEN, build_tiny_model, save_tiny_model

CHAT = [
    {"role": "system", "content": "You fix Rust."},
    {"role": "user", "content": "fn main() { let x = 1 }"},
]


def test_builds_in_about_a_second_and_is_deterministic_per_seed() -> None:
    started = time.perf_counter()
    model_a, tok_a = build_tiny_model(seed=0)
    assert time.perf_counter() - started < 5  # ~0.1 s alone; generous for a shared 2-core CI box
    model_b, tok_b = build_tiny_model(seed=0)
    model_c, _ = build_tiny_model(seed=1)

    assert isinstance(model_a, Qwen2ForCausalLM)
    assert tok_a.get_vocab() == tok_b.get_vocab()
    state_a, state_b, state_c = model_a.state_dict(), model_b.state_dict(), model_c.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert not torch.equal(
        state_a["model.layers.0.self_attn.q_proj.weight"], state_c["model.layers.0.self_attn.q_proj.weight"]
    )


def test_has_the_qwen2_layout() -> None:
    model, tokenizer = build_tiny_model()
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 4)
    assert (config.num_key_value_heads, config.intermediate_size) == (2, 128)
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= names
    attention = model.model.layers[0].self_attn
    assert attention.k_proj.weight.shape == (32, 64)  # 2 kv heads x head_dim 16: grouped-query attention
    assert config.vocab_size == len(tokenizer)


def test_leaves_the_callers_random_stream_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_tokenizer_has_qwen_chat_markers_and_round_trips_any_text() -> None:
    _, tokenizer = build_tiny_model()
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nYou fix Rust.<|im_end|>\n<|im_start|>user\nfn main() { let x = 1 }<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == PAD_TOKEN
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") != tokenizer.unk_token_id
    text = 'let s = "héllo → 世界";\n\tprintln!("{s}"); // ✓'
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    # Trained on Rust: common code is compressed, not spelled byte by byte.
    assert len(tokenizer("println!", add_special_tokens=False)["input_ids"]) < len("println!")


def test_generates_with_transformers() -> None:
    model, tokenizer = build_tiny_model()
    enc = tokenizer(
        tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True), return_tensors="pt"
    )
    out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    new = out[0, enc["input_ids"].shape[1] :]
    assert 1 <= len(new) <= 8 and int(new.max()) < len(tokenizer)


def test_supports_lora_and_backward() -> None:
    model, tokenizer = build_tiny_model()
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    batch = tokenizer(["fn main() {}", "let x = 1;"], return_tensors="pt", padding=True)
    loss = peft_model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    assert torch.isfinite(loss)
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # lora_B starts at zero, so only lora_A's gradient is zero at init; B must receive a gradient.
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in trainable.items() if "lora_B" in n)


def test_saves_and_loads_as_a_plain_hugging_face_folder(tmp_path) -> None:
    folder = save_tiny_model(tmp_path / "tiny", seed=0)
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    original, original_tok = build_tiny_model(seed=0)
    ids = torch.tensor([original_tok("fn main() {}")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, original(ids).logits, atol=1e-6)
    assert tokenizer.apply_chat_template(CHAT, tokenize=False) == original_tok.apply_chat_template(
        CHAT, tokenize=False
    )
    assert tokenizer.get_vocab() == original_tok.get_vocab()
