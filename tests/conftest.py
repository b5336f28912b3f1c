"""Shared model fixtures: the seeded tiny Qwen2 (learner.tiny) so every package tests against the real
architecture without weights. Only model fixtures belong here; everything else stays in its own test file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from learner.tiny import build_tiny_model, save_tiny_model

# Tiny matmuls gain nothing from a second thread, and on a loaded 2-core box OpenMP barrier waits made them
# 25-50x slower (measured: 12 s vs 0.4 s for one batched generate). Tests that want more threads set them.
torch.set_num_threads(1)

pytest_plugins = ["tests.db_fixtures"]

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

    from learner.runtime import ModelRuntime


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a whole module, whatever an earlier test left set (a runtime loaded with
    ``threads=2``): on two shared cores a second thread only spins against the other jobs. Modules opt in
    with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model() -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """One tiny model for the whole session. Read-only: wrapping it with PEFT or training it would leak into
    other tests — use ``fresh_tiny_model`` for that."""
    return build_tiny_model(seed=0)


@pytest.fixture
def fresh_tiny_model() -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """A private copy (same seed, same weights) that a test may mutate: LoRA, training, routed layers."""
    return build_tiny_model(seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model saved as a plain HF folder, for code paths that load by name (``DREAMFIX_MODEL``)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture
def tiny_runtime(fresh_tiny_model: tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]) -> ModelRuntime:
    """A CPU ModelRuntime around a private tiny model (no bank: base model routing)."""
    from learner.runtime import ModelRuntime

    model, tokenizer = fresh_tiny_model
    return ModelRuntime(model, tokenizer, device="cpu", model_id="tiny-qwen2-seed0")
