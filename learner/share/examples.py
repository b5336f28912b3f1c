"""Training examples → token batches, shared by LoRA seed training and Share Phase 2.

An example is ``(messages, answer)``: the chat messages the agent's prompt builder produced and the reply
to learn. The prompt is rendered by the tokenizer's own chat template with the generation prompt — exactly
the text inference feeds the model — and the answer is whatever the template appends for an assistant turn
(the reply plus its end-of-turn marker). Loss is on those answer tokens only.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

Message = dict[str, str]
Example = tuple[list[Message], str]

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on prompt tokens


def encode_example(
    tokenizer: Any, messages: Sequence[Message], answer: str, max_length: int
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
    return EncodedExample(
        input_ids=list(prompt_ids) + list(answer_ids),
        labels=[IGNORE_INDEX] * len(prompt_ids) + list(answer_ids),
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


def encode_all(tokenizer: Any, examples: Sequence[Example], max_length: int) -> list[EncodedExample]:
    if not examples:
        raise ValueError("no training examples")
    out = []
    for i, example in enumerate(examples):
        try:
            messages, answer = example
        except (TypeError, ValueError):
            raise ValueError(f"example {i} is not a (messages, answer) pair") from None
        try:
            out.append(encode_example(tokenizer, messages, answer, max_length))
        except ValueError as exc:
            raise ValueError(f"example {i}: {exc}") from None
    return out
