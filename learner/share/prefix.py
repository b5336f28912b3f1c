"""Frozen-prefix activation cache: run the layers nothing trains once per sequence, not once per use.

When adapters (LoRA seeds, Share coefficients, merged deltas) touch only the transformer layers from
``start`` on, the hidden state entering layer ``start`` depends on the token ids alone. Training and
teacher-forced scoring then need only the suffix: the cached hidden state goes in as ``inputs_embeds`` while
the decoder's layer list is temporarily cut to ``layers[start:]``, so the model's own forward (mask, rotary
positions, final norm, output layer) runs unchanged over the adapted layers. Logits are computed only for
the positions that are scored (the answer), not for the prompt: with a 152k-entry output layer that part is
a large share of the cost too.

Exactness: the suffix forward equals the full forward up to float rounding (tests compare logits with and
without LoRA and routed Share layers in the suffix). The cache is only valid while the prefix weights stay as
they were; :meth:`FrozenPrefix.check` compares a fingerprint of them and refuses to go on if they changed.

Sequences are processed one at a time, unpadded: on a CPU batching buys nothing for a teacher-forced pass,
and there is no padding to waste compute on. Losses are the mean over all scored tokens of a batch, as
Hugging Face's causal-LM loss computes it for a padded batch.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from learner.share.examples import IGNORE_INDEX, EncodedExample


class _Stop(Exception):
    """Raised by the hook on layer ``start`` once its input is captured: the rest of the forward is skipped."""


def decoder_stack(model: nn.Module) -> nn.Module:
    """The module holding the ``layers`` ModuleList (``model.model`` for Qwen2/Llama-style causal LMs; PEFT
    wrappers are looked through)."""
    for module in model.modules():
        layers = getattr(module, "layers", None)
        if isinstance(layers, nn.ModuleList) and hasattr(module, "embed_tokens"):
            return module
    raise ValueError("no decoder stack with `embed_tokens` and a `layers` list in this model")


def answer_span(example: EncodedExample) -> int:
    """Number of scored tokens; they must be the sequence's tail (encode_example puts the answer last)."""
    n = sum(1 for label in example.labels if label != IGNORE_INDEX)
    if n == 0:
        raise ValueError("example has no answer tokens")
    if any(label == IGNORE_INDEX for label in example.labels[len(example.labels) - n :]):
        raise ValueError("answer tokens must be the tail of the sequence")
    return n


def answer_nll(logits: Tensor, answer_ids: Sequence[int]) -> Tensor:
    """NLL (nats) of each answer token, from the logits of the ``len(answer_ids) + 1`` last positions (the
    position before each token predicts it; the last position's logits are not used)."""
    target = torch.tensor(list(answer_ids), dtype=torch.long, device=logits.device)
    logp = torch.log_softmax(logits[0, :-1].float(), dim=-1)
    return -logp.gather(-1, target[:, None])[:, 0]


class FrozenPrefix:
    """Hidden states entering layer ``start`` for token sequences, computed once and kept (LRU, bounded in
    bytes, on the CPU), plus the suffix forward that consumes them."""

    def __init__(self, model: nn.Module, start: int, *, max_bytes: int = 4 << 30) -> None:
        self.model = model
        self.stack: Any = decoder_stack(model)
        layers: Any = self.stack.layers
        if not 0 <= start < len(layers):
            raise ValueError(f"start layer must be in [0, {len(layers)}), got {start}")
        config = getattr(self.stack, "config", None)
        types = list(getattr(config, "layer_types", None) or [])
        if types and types[: len(types) - start] != types[start:]:
            # The stack picks each layer's mask by its position in the (cut) list: the kinds must line up.
            raise ValueError("the suffix mixes attention kinds (sliding/full): no prefix cache for it")
        self.start = start
        self.max_bytes = max_bytes
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self._fingerprint = self._prefix_fingerprint()

    # ------------------------------------------------------------------------------------------ prefix
    def _prefix_fingerprint(self) -> list[float]:
        params = [*self.stack.embed_tokens.parameters()]
        for layer in self.stack.layers[: self.start]:
            params.extend(layer.parameters())
        with torch.no_grad():
            return [float(p.detach().float().sum()) for p in params]

    def check(self) -> None:
        """Raise if a prefix weight changed since the cache was made (its entries would be stale)."""
        if self._prefix_fingerprint() != self._fingerprint:
            raise RuntimeError(
                f"weights below layer {self.start} changed: the frozen-prefix cache no longer applies"
            )

    def hidden(self, input_ids: Sequence[int]) -> Tensor:
        """(1, n, hidden) state entering layer ``start`` (on the model's device, no grad)."""
        key = hashlib.sha1(torch.tensor(list(input_ids), dtype=torch.int64).numpy().tobytes()).hexdigest()
        device = next(self.model.parameters()).device
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return cached.to(device)
        self.misses += 1
        captured: list[Tensor] = []

        def grab(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            captured.append((args[0] if args else kwargs["hidden_states"]).detach())
            raise _Stop

        ids = torch.tensor([list(input_ids)], dtype=torch.long, device=device)
        if self.start == 0:
            with torch.no_grad():
                captured.append(self.stack.embed_tokens(ids).detach())
        else:
            handle = self.stack.layers[self.start].register_forward_pre_hook(grab, with_kwargs=True)
            try:
                with torch.no_grad():
                    self.stack(input_ids=ids, use_cache=False)
            except _Stop:
                pass
            finally:
                handle.remove()
        state = captured[0].to("cpu").clone()
        size = state.numel() * state.element_size()
        if size <= self.max_bytes:
            self._cache[key] = state
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._cache.popitem(last=False)
                self._bytes -= old.numel() * old.element_size()
        return state.to(device)

    def require_suffix(self, module_names: Iterator[str] | Sequence[str]) -> None:
        """Refuse adapted modules below ``start``: their change would not reach the cached prefix."""
        for name in module_names:
            found = re.search(r"layers\.(\d+)\.", name)
            if found is None or int(found.group(1)) < self.start:
                raise ValueError(
                    f"{name} is not in a layer ≥ {self.start}: the frozen-prefix cache would ignore its change"
                )

    # ------------------------------------------------------------------------------------------ suffix
    @contextmanager
    def suffix(self) -> Iterator[None]:
        """The decoder stack holds only ``layers[start:]`` for the duration (modules shared, not copied)."""
        full = self.stack.layers
        self.stack.layers = nn.ModuleList(list(full)[self.start :])
        try:
            yield
        finally:
            self.stack.layers = full

    def logits(self, forward: Callable[..., Any], input_ids: Sequence[int], keep: int) -> Tensor:
        """Logits of the last ``keep`` positions, computed from the cached prefix through ``forward`` (the
        model, or a PEFT wrapper of it; adapters and Share routing in the suffix apply as usual)."""
        state = self.hidden(input_ids)
        with self.suffix():
            return forward(inputs_embeds=state, use_cache=False, logits_to_keep=keep).logits

    def token_nll(self, forward: Callable[..., Any], example: EncodedExample) -> Tensor:
        """NLL (nats) of each answer token of ``example`` (differentiable w.r.t. the suffix's adapters)."""
        n = answer_span(example)
        return answer_nll(self.logits(forward, example.input_ids, n + 1), example.input_ids[-n:])

    def loss(
        self,
        forward: Callable[..., Any],
        batch: Sequence[EncodedExample],
        each: Callable[[], Any] | None = None,
    ) -> Tensor:
        """Mean NLL over all answer tokens of the batch (as the padded-batch causal-LM loss). ``each``, if
        given, is a context-manager factory entered around every example's forward (e.g. Share routing)."""
        total: Tensor | None = None
        count = 0
        for example in batch:
            if each is None:
                nll = self.token_nll(forward, example)
            else:
                with each():
                    nll = self.token_nll(forward, example)
            total = nll.sum() if total is None else total + nll.sum()
            count += nll.numel()
        if total is None:
            raise ValueError("empty batch")
        return total / count

    def stats(self) -> dict[str, Any]:
        return {
            "start_layer": self.start,
            "entries": len(self._cache),
            "mbytes": round(self._bytes / 2**20, 1),
            "hits": self.hits,
            "misses": self.misses,
        }
