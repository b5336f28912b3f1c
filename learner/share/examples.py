"""Training examples → token batches, shared by LoRA seed training and Share Phase 2.

An example is ``(messages, answer)``: the chat messages the agent's prompt builder produced and the reply
to learn. The prompt is rendered by the tokenizer's own chat template with the generation prompt — exactly
the text inference feeds the model — and the answer is whatever the template appends for an assistant turn
(the reply plus its end-of-turn marker). Loss is on those answer tokens only, and the output layer runs on
their positions only (``answer_lm_loss``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from learner.share.checkpoint import chunked_head_nll

Message = dict[str, str]
Example = tuple[list[Message], str]

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on prompt tokens
    weights: tuple[float, ...] | None = None  # per-token loss weight (edit-weighted loss); None = uniform


def copied_line_mask(answer: str, source: str) -> list[bool]:
    """Per character of ``answer``: True where it lies on a line copied unchanged (modulo surrounding
    whitespace) from ``source`` — the broken program. Blank lines count as copied."""
    source_lines = {line.strip() for line in source.splitlines()}
    mask: list[bool] = []
    for line in answer.splitlines(keepends=True):
        copied = line.strip() in source_lines or not line.strip()
        mask.extend([copied] * len(line))
    return mask


def edit_token_weights(
    tokenizer: Any, answer_text: str, answer_ids: Sequence[int], source: str, copy_weight: float
) -> list[float]:
    """Weight per answer token: ``copy_weight`` for tokens on lines copied from ``source``, 1.0 on changed
    lines (the edit). Token spans come from the tokenizer's offset mapping of ``answer_text``."""
    if not 0.0 <= copy_weight <= 1.0:
        raise ValueError(f"copy_weight must be in [0, 1], got {copy_weight}")
    enc = tokenizer(answer_text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"][: len(answer_ids)]) != list(answer_ids):
        raise ValueError("answer tokens do not match their offset mapping")
    mask = copied_line_mask(answer_text, source)
    weights = []
    for start, end in enc["offset_mapping"][: len(answer_ids)]:
        span = mask[start:end]
        copied = bool(span) and all(span)
        weights.append(copy_weight if copied else 1.0)
    return weights


def encode_example(
    tokenizer: Any,
    messages: Sequence[Message],
    answer: str,
    max_length: int,
    *,
    source: str | None = None,
    copy_weight: float = 1.0,
) -> EncodedExample:
    """Tokenise one example with the chat template; labels cover the answer (and end-of-turn) only.

    Over-long examples keep the answer and drop the *start* of the prompt; an answer longer than
    ``max_length`` on its own is cut at its end.
    """
    if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    if not isinstance(answer, str) or not answer:
        raise ValueError("answer must be a non-empty string")
    if max_length < 2:
        raise ValueError(f"max_length must be ≥ 2, got {max_length}")
    prompt = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": answer}], tokenize=False
    )
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the prompt differently once an answer is appended")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    answer_ids = answer_ids[: max_length - 1]
    prompt_ids = prompt_ids[len(prompt_ids) - min(len(prompt_ids), max_length - len(answer_ids)) :]
    weights = None
    if source is not None and copy_weight != 1.0:
        answer_w = edit_token_weights(tokenizer, full[len(prompt) :], answer_ids, source, copy_weight)
        weights = tuple([0.0] * len(prompt_ids) + answer_w)
    return EncodedExample(
        input_ids=list(prompt_ids) + list(answer_ids),
        labels=[IGNORE_INDEX] * len(prompt_ids) + list(answer_ids),
        weights=weights,
    )


def collate(batch: Sequence[EncodedExample], pad_id: int, device: torch.device | str) -> dict[str, Tensor]:
    """Right-padded tensors for a causal-LM loss (padding is masked and ignored by the loss)."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def collate_weights(batch: Sequence[EncodedExample], device: torch.device | str) -> Tensor:
    """Right-padded per-token weights matching ``collate``'s labels (1.0 where an example has none)."""
    width = max(len(e.input_ids) for e in batch)
    out = torch.zeros((len(batch), width), dtype=torch.float32)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        out[row, :n] = torch.tensor(example.weights) if example.weights is not None else 1.0
    return out.to(device)


def weighted_lm_loss(logits: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
    """Causal-LM cross entropy with per-token weights: sum(w * nll) / sum(w) over label positions, from
    full (batch × length × vocab) logits. Training uses ``answer_lm_loss`` (same value, a fraction of the
    memory); this is its reference."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    shift_w = weights[:, 1:] * (shift_labels != IGNORE_INDEX)
    nll = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view_as(shift_labels)
    return (nll * shift_w).sum() / shift_w.sum().clamp_min(1e-8)


def _head_nll(head: nn.Module, hidden: Tensor, targets: Tensor) -> Tensor:
    """Per-token NLL of ``targets`` from the output layer over ``hidden`` (rows × hidden)."""
    return torch.nn.functional.cross_entropy(head(hidden).float(), targets, reduction="none")


def answer_lm_loss(model: nn.Module, batch: Mapping[str, Tensor], weights: Tensor | None = None) -> Tensor:
    """The causal-LM loss of ``batch`` (``collate``'s tensors) with the output layer applied to the answer
    positions only: the backbone (``get_decoder()``: ``model.model`` for Qwen2; a PEFT wrapper is looked
    through, its adapters stay in the forward) gives the hidden states, the ones at positions that predict a
    label (label ≠ IGNORE_INDEX one step later) are gathered, and only those go through ``lm_head`` — not
    float32 logits over the whole vocabulary for every prompt token. ``weights`` None: the mean NLL over the
    answer tokens (Hugging Face's causal-LM loss); else sum(w · nll) / sum(w) (``weighted_lm_loss``)."""
    unwrap = getattr(model, "get_base_model", None)
    base: Any = unwrap() if callable(unwrap) else model
    body, head = base.get_decoder(), base.get_output_embeddings()
    hidden = body(
        input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    scored = targets != IGNORE_INDEX
    answer_hidden, answer_targets = hidden[:, :-1][scored], targets[scored]  # (answer tokens × hidden)
    nll = chunked_head_nll(head, answer_hidden, answer_targets, _head_nll)
    if nll is None:
        nll = _head_nll(head, answer_hidden, answer_targets)
    if weights is None:
        return nll.mean()
    w = weights[:, 1:][scored].to(nll.dtype)
    return (nll * w).sum() / w.sum().clamp_min(1e-8)


def pad_token_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def batch_stream(
    encoded: Sequence[EncodedExample], batch_size: int, seed: int
) -> Iterator[list[EncodedExample]]:
    """Endless seeded epochs of shuffled batches (the last, short batch of an epoch included)."""
    if not encoded:
        raise ValueError("no training examples")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    rng = random.Random(seed)
    order = list(range(len(encoded)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            yield [encoded[i] for i in order[start : start + batch_size]]


def prompt_source(messages: Sequence[Message]) -> str:
    """The text an answer line can be copied from: every user message (the broken program is in one)."""
    return "\n".join(m["content"] for m in messages if m.get("role") == "user")


def encode_all(
    tokenizer: Any, examples: Sequence[Example], max_length: int, *, copy_weight: float = 1.0
) -> list[EncodedExample]:
    """Encode every example; ``copy_weight`` < 1 turns on the edit-weighted loss (answer lines copied
    verbatim from the prompt weigh ``copy_weight``, changed lines 1.0; 0.0 masks copied lines)."""
    if not examples:
        raise ValueError("no training examples")
    out = []
    for i, example in enumerate(examples):
        try:
            messages, answer = example
        except (TypeError, ValueError):
            raise ValueError(f"example {i} is not a (messages, answer) pair") from None
        try:
            source = prompt_source(messages) if copy_weight != 1.0 else None
            out.append(
                encode_example(
                    tokenizer, messages, answer, max_length, source=source, copy_weight=copy_weight
                )
            )
        except (ValueError, KeyError, AttributeError) as exc:
            raise ValueError(f"example {i}: {exc}") from None
    return out
