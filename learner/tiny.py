"""A tiny, seeded, random Qwen2 chat model built offline in about a second.

Tests and CI have no model hub and no time for the real weights, yet the code they exercise (chat templates,
batched generation, LoRA, backward, save/load, the routed Share layers) must run against the real
architecture. This model has exactly the Qwen2 module layout (q/k/v/o, gate/up/down projections, grouped KV
heads, tied embeddings like Qwen2.5-0.5B) at toy sizes, and a byte-level BPE tokenizer trained on the spot
with the same special tokens and chat template as Qwen2.5-Instruct. Same seed → same weights and tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END]

# Qwen2.5-Instruct's template reduced to its essentials: same markers, same generation prompt, so prompt
# code written against the tiny model renders identically for the real one (minus its default system line).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

TINY_VOCAB_SIZE = 1024

# Qwen2's pre-tokenization regex (transformers' tokenization_qwen2.PRETOKENIZE_REGEX), so the tiny tokenizer
# splits text like the real one and a GGUF export of it reads back identically.
QWEN2_SPLIT_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

_CORPUS = [
    'fn main() {\n    let s = String::from("hi");\n    let t = s.clone();\n    println!("{} {}", s, t);\n}\n',
    "fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n",
    'let mut v: Vec<u32> = Vec::new();\nv.push(1);\nfor x in &v {\n    println!("{x}");\n}\n',
    "struct Point { x: f64, y: f64 }\nimpl Point {\n    fn norm(&self) -> f64 { (self.x * self.x + self.y * self.y).sqrt() }\n}\n",
    "use std::collections::HashMap;\nlet mut m: HashMap<String, usize> = HashMap::new();\n"
    "*m.entry(key).or_insert(0) += 1;\n",
    "fn longest<'a>(a: &'a str, b: &'a str) -> &'a str { if a.len() > b.len() { a } else { b } }\n",
    'match opt {\n    Some(x) => x,\n    None => return Err("missing".to_string()),\n}\n',
    "enum Shape { Circle(f64), Square(f64) }\ntrait Area { fn area(&self) -> f64; }\n",
    "error[E0382]: borrow of moved value: `s`\n  --> src/main.rs:4:20\n   |\n"
    "help: consider cloning the value if the performance cost is acceptable\n",
    "error[E0308]: mismatched types: expected `i32`, found `&str`\n",
    "error[E0502]: cannot borrow `v` as mutable because it is also borrowed as immutable\n",
    "You are a Rust expert. Fix the compile error in the program below and reply with the whole fixed "
    "program in one ```rust code block.\n",
    "The borrow checker rejects this program because the value was moved into another variable and then "
    "used again. Cloning the string, or borrowing it instead of moving it, fixes the error.\n",
    "Here is the fixed program. The change is small: the original code stays as it was except for the "
    "line that the compiler pointed at.\n",
    "system\nuser\nassistant\n0123456789 ()[]{}<>;:,.!?'\"`~@#$%^&*-+=_/\\|\n",
]


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the built-in corpus: any text round-trips, Rust and English stay short."""
    backend = Tokenizer(models.BPE())
    # Qwen2's own pipeline: NFC, its split regex (digits one by one, code punctuation runs), then bytes.
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        padding_side="left",
        model_max_length=2048,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config(vocab_size: int, pad_token_id: int, eos_token_id: int) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        # A wider init than the default 0.02 keeps the random logits well separated, so greedy decoding is
        # not decided by float rounding (batched and one-by-one runs must agree token for token).
        initializer_range=0.2,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=None,
    )


def build_tiny_model(seed: int = 0) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """Return a fresh float32 tiny Qwen2 and its tokenizer, identical for the same ``seed``."""
    tokenizer = build_tiny_tokenizer()
    pad_id = int(tokenizer.convert_tokens_to_ids(PAD_TOKEN))  # type: ignore[arg-type]
    eos_id = int(tokenizer.convert_tokens_to_ids(IM_END))  # type: ignore[arg-type]
    config = tiny_config(len(tokenizer), pad_id, eos_id)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    finally:
        # Building a test model must not disturb the caller's random stream.
        torch.random.set_rng_state(generator_state)
    model.generation_config = GenerationConfig(
        eos_token_id=eos_id, pad_token_id=pad_id, do_sample=False, max_new_tokens=32
    )
    model.eval()
    return model, tokenizer


def save_tiny_model(directory: str | Path, seed: int = 0) -> Path:
    """Write the tiny model as a plain Hugging Face folder, loadable through ``DREAMFIX_MODEL=<dir>``."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model, tokenizer = build_tiny_model(seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_gguf(path: str | Path, seed: int = 0) -> Path:
    """Write the tiny model as a float32 GGUF (llama.cpp's qwen2 layout), so the GGUF → HF conversion that
    provisioning relies on can be tested offline against known weights."""
    import gguf
    import numpy as np

    model, tokenizer = build_tiny_model(seed)
    config: Any = model.config  # typed loosely by transformers; every field is set by tiny_config
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_name("dreamfix-tiny")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    special = set(SPECIAL_TOKENS)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in special else 1 for t in tokens])  # 3 = control, 1 = normal
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_eos_token_id(vocab[IM_END])
    writer.add_pad_token_id(vocab[PAD_TOKEN])
    writer.add_chat_template(CHAT_TEMPLATE)
    names = {
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    }  # fmt: skip
    for name, tensor in model.state_dict().items():
        array = tensor.detach().float().numpy().astype(np.float32)
        if name == "model.embed_tokens.weight":
            writer.add_tensor("token_embd.weight", array)
        elif name == "model.norm.weight":
            writer.add_tensor("output_norm.weight", array)
        elif name.startswith("model.layers."):
            _, _, layer, rest = name.split(".", 3)
            module, kind = rest.rsplit(".", 1)
            writer.add_tensor(f"blk.{layer}.{names[module]}.{kind}", array)
        # lm_head.weight is tied to the embedding: llama.cpp omits output.weight for tied models.
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
