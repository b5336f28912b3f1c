"""Model runtime: chat prompts in, completions out, as fast as two CPU cores allow.

Why a hand-written decode loop instead of ``model.generate``: the agent sends many prompts at once and each
row may belong to a different Share task, so one loop owns left-padded batching with a shared KV cache, per
row stop strings, per row seeded sampling, dropping finished rows from the batch, the routing context that
the Share layers read, and prompt-lookup decoding (a fix mostly copies its input, so draft tokens are looked
up in the prompt and verified in one forward pass — exactly the greedy result, in fewer passes).
"""

from __future__ import annotations

import copy
import inspect
import math
import random
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from learner import provision
from learner.cpu import cpu_info
from learner.routing import TaskKey, routed

StopReason = Literal["eos", "stop", "length", "deadline"]
ChatMessages = list[dict[str, str]]
GenerateFn = Callable[[list[ChatMessages], list[TaskKey | None] | None], list["Generation"]]

BASE_TASK = -1


class PromptTooLong(ValueError):
    """A prompt that, with the tokens to generate, does not fit the model's context. ``prompt_index`` is its
    position in the batch (the fix loop drops that problem and asks again for the rest)."""

    def __init__(self, prompt_index: int, message: str) -> None:
        super().__init__(message)
        self.prompt_index = prompt_index


@dataclass(frozen=True)
class GenerationParams:
    """How to decode. ``temperature == 0`` is greedy; ``prompt_lookup`` only changes speed, never text."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: Sequence[str] = field(default_factory=tuple)
    prompt_lookup: bool = False
    #: A ``time.monotonic()`` instant: rows still decoding then stop with ``stopped_by == "deadline"`` and
    #: keep the text they have. None: no limit. The service sets it from the request's budget.
    deadline: float | None = None
    #: Each row stops after at most this multiple of its own prompt's tokens (and ``max_new_tokens``). A fix
    #: reply is a cause sentence and the program, while the prompt holds the program, rustc's diagnostics and
    #: the instructions: a reply longer than its prompt is a sample that lost its way (the night's sampler
    #: sets 1.0; at temperature 0.7 such a row otherwise ran on to ``max_new_tokens``). None: no cap.
    prompt_length_cap: float | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.prompt_length_cap is not None and not self.prompt_length_cap > 0:
            raise ValueError(f"prompt_length_cap must be > 0, got {self.prompt_length_cap}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.stop, str) or any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop must be a list of non-empty strings")


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    stopped_by: StopReason


class BankView(Protocol):
    """What the runtime reads of one pinned bank snapshot (``learner.share.bank.BankSnapshot``) itself:
    the bank row of each row's (task, version); the routed layers read the rest."""

    def rows_for(self, keys: Sequence[TaskKey | None]) -> list[int]: ...


class CoefficientBank(Protocol):
    """What the runtime needs from the Share bank: one consistent view of the coefficients per call."""

    def snapshot(self) -> Any: ...


def render_chat(tokenizer: Any, messages: ChatMessages) -> str:
    """The one place chat messages become prompt text — training must use it too, so the prompts match.

    When the last message is the assistant's, its turn is left open and generation continues it (the loop
    uses this to ask for the code after a reply that only explained the error)."""
    if messages and messages[-1].get("role") == "assistant":
        return str(tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True))
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def _validate_messages(messages: Any, index: int) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"prompt {index} must be a non-empty list of chat messages")
    for message in messages:
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or not isinstance(message.get("content"), str)
        ):
            raise ValueError(f"prompt {index}: every message needs string 'role' and 'content' fields")


@dataclass
class _Row:
    """One prompt in flight: its place in the caller's list, its task, tokens and result so far."""

    index: int
    task: int
    prompt_ids: list[int]
    generator: torch.Generator | None
    started: float
    limit: int  # new tokens at most: max_new_tokens, or less under GenerationParams.prompt_length_cap
    new_ids: list[int] = field(default_factory=list)
    result: Generation | None = None


@dataclass
class _Prefix:
    """The keys/values of a prefilled prompt for one task row (and, for a Share row, one bank snapshot)."""

    task: int
    snapshot: Any
    cache: DynamicCache


#: Nucleus sampling looks for the nucleus among this many most likely tokens first (a full sort of a
#: 151,936-token vocabulary per row and step cost 265 ms at batch 8 on one core, more than the model step).
NUCLEUS_CANDIDATES = 256


def nucleus(probs: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-p nucleus of each row of ``probs``: ``(kept, ids)`` with ``kept[j]`` the probabilities of
    the tokens ``ids[j]`` (most likely first; zeros past the nucleus, unnormalised, as
    ``torch.multinomial`` takes them). A token is kept when the mass of the tokens before it is at most
    ``top_p``. Exact: taken from the ``NUCLEUS_CANDIDATES`` most likely tokens when their mass exceeds
    ``top_p`` (then no later token can be in the nucleus), else from a full sort of the vocabulary."""
    k = min(NUCLEUS_CANDIDATES, probs.shape[-1])
    top, ids = probs.topk(k, dim=-1)
    if not bool((top.sum(dim=-1) > top_p).all()):
        top, ids = probs.sort(dim=-1, descending=True)
    before = top.cumsum(dim=-1) - top
    return top.masked_fill(before > top_p, 0.0), ids


class ModelRuntime:
    """A causal LM with its tokenizer, serving batched chat generation to several threads."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: str | torch.device = "cpu",
        model_id: str = "model",
        batch_size: int = 8,
    ) -> None:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(f"tokenizer of {model_id!r} has no chat template; an instruct model is required")
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.model_id = model_id
        self.batch_size = batch_size
        # Set by the Share code; None means every row runs the base model.
        self.bank: CoefficientBank | None = None
        # Prompt-lookup tuning: n-gram sizes tried (longest first) and the most draft tokens per pass.
        self.lookup_ngram_sizes: tuple[int, ...] = (4, 3, 2)
        self.lookup_max_draft = 24
        self.lookup_min_draft = 4
        # Counters over this runtime's prompt-lookup calls: forward passes, draft tokens proposed, accepted;
        # and prompt tokens whose keys/values came from the prefix cache instead of a prefill.
        self.lookup_stats: Counter[str] = Counter()
        # Prefix cache (prompt-lookup path): the KV cache of recent prompts. A fix loop's next attempt repeats
        # its previous prompt up to the feedback, and a continued reply repeats its whole prompt, so most of a
        # prefill is already computed. 0 turns it off.
        self.prefix_cache_size = 16
        self.prefix_min_tokens = 32
        self._prefixes: OrderedDict[tuple[int, ...], _Prefix] = OrderedDict()
        self._lock = threading.Lock()
        self.model.to(self.device)
        self.model.eval()
        self.eos_ids = self._eos_ids()
        pad = tokenizer.pad_token_id
        self.pad_id: int = int(pad if pad is not None else min(self.eos_ids))
        self.context_length = int(getattr(model.config, "max_position_embeddings", 32768))
        # transformers 5 renamed ``past_key_values`` to ``cache``; accept models from either side.
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        forward_args = inspect.signature(base.forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward_args else "past_key_values"

    @classmethod
    def load(
        cls,
        spec: str,
        dtype: str = "auto",
        device: str = "auto",
        threads: int | None = None,
        cache_dir: str | None = None,
        batch_size: int = 8,
        weights: str = "float",
    ) -> ModelRuntime:
        """Load a provisioned model (name, folder, hub id or .gguf) — see ``learner.provision``.

        ``weights``: ``float`` runs ``dtype`` as loaded; ``int8`` swaps every linear layer for
        ``learner.quant.Int8Linear`` (CPU decoding reads a quarter of the bytes; training keeps the float
        weights); ``auto``: int8 on CPU, float on CUDA."""
        from learner import quant

        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        resolved_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, resolved_device)
        source = provision.resolve_model(spec, cache_dir)
        if source.local_dir is not None:
            provision.check_memory_for(source.local_dir, torch_dtype)
        location = str(source.local_dir) if source.local_dir is not None else source.hub_id
        assert location is not None
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype)
        if quant.resolve_weights(weights, resolved_device) == "int8":
            quant.quantize_for_decode(model)
        return cls(model, tokenizer, device=resolved_device, model_id=source.name, batch_size=batch_size)

    # ----------------------------------------------------------------------------------------- public API

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render(self, messages: ChatMessages) -> str:
        return render_chat(self.tokenizer, messages)

    def generate(
        self,
        prompts: list[ChatMessages],
        params: GenerationParams,
        keys: Sequence[TaskKey | None] | None = None,
        snapshot: BankView | None = None,
    ) -> list[Generation]:
        """One completion per prompt, in the caller's order. ``keys[i]`` = (task, version) routes prompt i
        through that task's coefficients; None (or no ``keys``) = the base model.

        ``snapshot`` pins a bank snapshot the caller already holds (the service pins one per request so its
        routes and every round of its fix loop see the same versions); default: the bank's current one, taken
        when the call starts. A key the snapshot does not serve raises ``ValueError``."""
        if keys is not None and len(keys) != len(prompts):
            raise ValueError(f"keys has {len(keys)} entries for {len(prompts)} prompts")
        for i, messages in enumerate(prompts):
            _validate_messages(messages, i)
        if snapshot is None and self.bank is not None:
            snapshot = self.bank.snapshot()
        rows = self._make_rows(prompts, _bank_rows(keys, snapshot, len(prompts)), params)
        with self._lock, torch.inference_mode():
            greedy_lookup = params.prompt_lookup and params.temperature == 0
            if greedy_lookup:
                for row in rows:
                    self._decode_with_lookup(row, params, snapshot)
            else:
                # Similar lengths in one micro-batch waste the least compute on padding.
                ordered = sorted(rows, key=lambda r: len(r.prompt_ids), reverse=True)
                size = max(1, self.batch_size)
                for start in range(0, len(ordered), size):
                    self._decode_batch(ordered[start : start + size], params, snapshot)
        results = [row.result for row in rows]
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def forget_prefixes(self) -> int:
        """Drop the prefix cache; returns how many entries went. Needed whenever the model's weights change
        in place (an experiment merging a LoRA delta into them): a base row's cached keys/values are only
        valid for the weights that computed them. Share rows are already keyed by their bank snapshot."""
        with self._lock:
            dropped = len(self._prefixes)
            self._prefixes.clear()
        return dropped

    # ----------------------------------------------------------------------------------------- internals

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(int(i) for i in configured)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        # Chat models end a turn with <|im_end|>; some configs only list <|endoftext|>.
        vocab = self.tokenizer.get_vocab()
        for marker in ("<|im_end|>", "<|endoftext|>"):
            if marker in vocab:
                ids.add(int(vocab[marker]))
        if not ids:
            raise ValueError(f"model {self.model_id!r} defines no end-of-sequence token")
        return ids

    def _make_rows(
        self, prompts: list[ChatMessages], tasks: list[int], params: GenerationParams
    ) -> list[_Row]:
        rows = []
        base_seed = params.seed if params.seed is not None else random.SystemRandom().randrange(2**62)
        now = time.perf_counter()
        for i, (messages, task) in enumerate(zip(prompts, tasks, strict=True)):
            ids = self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"]
            if len(ids) + params.max_new_tokens > self.context_length:
                raise PromptTooLong(
                    i,
                    f"prompt {i} has {len(ids)} tokens; with max_new_tokens={params.max_new_tokens} it exceeds "
                    f"the model's context of {self.context_length} tokens",
                )
            generator = None
            if params.temperature > 0:
                # One generator per prompt: a prompt's sample does not depend on its batch neighbours.
                generator = torch.Generator(device=self.device).manual_seed(base_seed + i)
            limit = params.max_new_tokens
            if params.prompt_length_cap is not None:
                limit = max(1, min(limit, math.ceil(params.prompt_length_cap * len(ids))))
            rows.append(
                _Row(index=i, task=task, prompt_ids=list(ids), generator=generator, started=now, limit=limit)
            )
        return rows

    @contextmanager
    def _routing(self, tasks: list[int], snapshot: Any) -> Iterator[None]:
        if self.bank is None and snapshot is None:
            yield  # nothing to route: the base model, exactly
            return
        row_tasks = torch.tensor(tasks, dtype=torch.long, device=self.device)
        with routed(row_tasks, snapshot):
            yield

    def _forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: DynamicCache,
        tasks: list[int],
        snapshot: Any,
        all_logits: bool = False,
    ) -> torch.Tensor:
        with self._routing(tasks, snapshot):
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=True,
                **{self._cache_kwarg: cache},
                logits_to_keep=0 if all_logits else 1,
            )
        return out.logits.float()

    def _choose(self, logits: torch.Tensor, rows: list[_Row], params: GenerationParams) -> list[int]:
        """Next token per row: argmax, or a nucleus sample from each row's own generator."""
        if params.temperature == 0:
            return logits.argmax(dim=-1).tolist()
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p >= 1:
            return [
                int(torch.multinomial(probs[j], 1, generator=row.generator)) for j, row in enumerate(rows)
            ]
        kept, ids = nucleus(probs, params.top_p)
        return [
            int(ids[j, torch.multinomial(kept[j], 1, generator=row.generator)]) for j, row in enumerate(rows)
        ]

    def _accept(self, row: _Row, token: int, params: GenerationParams) -> bool:
        """Append one decided token to the row; return True when the row is finished."""
        if token in self.eos_ids:
            self._finish(row, self._decode(row.new_ids), "eos")
            return True
        row.new_ids.append(token)
        text = self._decode(row.new_ids)
        if params.stop:
            cut = min((pos for pos in (text.find(s) for s in params.stop) if pos >= 0), default=-1)
            if cut >= 0:
                self._finish(row, text[:cut], "stop")
                return True
        if len(row.new_ids) >= row.limit:
            self._finish(row, text, "length")
            return True
        if params.deadline is not None and time.monotonic() >= params.deadline:
            self._finish(row, text, "deadline")
            return True
        return False

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def _finish(self, row: _Row, text: str, reason: StopReason) -> None:
        row.result = Generation(
            text=text,
            prompt_tokens=len(row.prompt_ids),
            completion_tokens=len(row.new_ids) + (1 if reason == "eos" else 0),
            seconds=time.perf_counter() - row.started,
            stopped_by=reason,
        )

    def _decode_batch(self, rows: list[_Row], params: GenerationParams, snapshot: Any) -> None:
        """Left-padded batched decoding with one KV cache; finished rows leave the batch."""
        started = time.perf_counter()
        for row in rows:
            row.started = started
        # Rows that ask the same prompt of the same task (the k samples of one problem) share one prefill:
        # each row's cache and first logits are a copy of its prompt's.
        first_of: dict[tuple[tuple[int, ...], Any], int] = {}
        source = [first_of.setdefault((tuple(r.prompt_ids), r.task), j) for j, r in enumerate(rows)]
        unique = sorted(set(source))
        width = max(len(r.prompt_ids) for r in rows)
        input_ids = torch.full((len(unique), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(unique), width), dtype=torch.long)
        for j, row in enumerate(rows[u] for u in unique):
            input_ids[j, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
            mask[j, width - len(row.prompt_ids) :] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        # Positions count real tokens only, so a padded row sees the same positions as it would alone.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        tasks = [rows[u].task for u in unique]
        logits = self._forward(input_ids, mask, positions, cache, tasks, snapshot)[:, -1]
        if len(unique) < len(rows):
            expand = torch.tensor([unique.index(src) for src in source], device=self.device)
            cache.batch_select_indices(expand)
            logits, mask, positions = logits[expand], mask[expand], positions[expand]
            self.lookup_stats["prefill_rows_shared"] += len(rows) - len(unique)
        active = list(rows)
        next_pos = positions[:, -1] + 1
        while True:
            tokens = self._choose(logits, active, params)
            keep = [
                j
                for j, (row, tok) in enumerate(zip(active, tokens, strict=True))
                if not self._accept(row, tok, params)
            ]
            if not keep:
                return
            if len(keep) < len(active):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, next_pos = mask[index], next_pos[index]
                active = [active[j] for j in keep]
                tokens = [tokens[j] for j in keep]
            step_ids = torch.tensor(tokens, dtype=torch.long, device=self.device).unsqueeze(1)
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            logits = self._forward(
                step_ids, mask, next_pos.unsqueeze(1), cache, [r.task for r in active], snapshot
            )[:, -1]
            next_pos = next_pos + 1

    def _draft(self, seq: list[int], copy_from: int | None, limit: int) -> tuple[list[int], int | None]:
        """Draft tokens for prompt lookup: continue the last copy if it still lines up, else find the most
        recent earlier occurrence of the longest trailing n-gram and propose what followed it."""
        if limit <= 0:
            return [], None
        if copy_from is not None and 0 < copy_from < len(seq) - 1 and seq[copy_from - 1] == seq[-1]:
            return seq[copy_from : copy_from + limit], copy_from
        for n in self.lookup_ngram_sizes:
            if len(seq) <= n:
                continue
            tail = seq[-n:]
            for start in range(len(seq) - n - 1, -1, -1):
                if seq[start : start + n] == tail:
                    source = start + n
                    return seq[source : source + limit], source
        return [], None

    def _cached_prefix(self, ids: list[int], task: int, snapshot: Any) -> tuple[DynamicCache, int]:
        """A private copy of the cached keys/values sharing the longest prefix with ``ids`` (cut to that
        prefix), and its length; a fresh cache and 0 when no entry shares at least ``prefix_min_tokens``."""
        best: tuple[int, tuple[int, ...]] | None = None
        for key, entry in self._prefixes.items():
            if entry.task != task or (task != BASE_TASK and entry.snapshot is not snapshot):
                continue  # a Share row's keys/values depend on its coefficients
            common = _common_prefix(key, ids)
            if common >= self.prefix_min_tokens and (best is None or common > best[0]):
                best = (common, key)
        if best is None:
            return DynamicCache(config=self.model.config), 0
        common, key = best
        self._prefixes.move_to_end(key)
        cache = copy.deepcopy(self._prefixes[key].cache)
        if len(key) > common:
            cache.crop(-(len(key) - common))
        self.lookup_stats.update(prefix_tokens_reused=common)
        return cache, common

    def _remember_prefix(self, ids: list[int], task: int, snapshot: Any, cache: DynamicCache) -> None:
        if self.prefix_cache_size <= 0 or len(ids) < self.prefix_min_tokens:
            return
        self._prefixes[tuple(ids)] = _Prefix(
            task, snapshot if task != BASE_TASK else None, copy.deepcopy(cache)
        )
        self._prefixes.move_to_end(tuple(ids))
        while len(self._prefixes) > self.prefix_cache_size:
            self._prefixes.popitem(last=False)

    def _decode_with_lookup(self, row: _Row, params: GenerationParams, snapshot: Any) -> None:
        """Greedy decoding, batch 1, verifying looked-up draft tokens in one pass each (prompt lookup)."""
        row.started = time.perf_counter()
        tasks = [row.task]
        seq = list(row.prompt_ids)
        # Prefill all but the last token; each step below feeds the last decided token plus the drafts.
        cache, reused = self._cached_prefix(seq[:-1], row.task, snapshot)
        if len(seq) - 1 > reused:
            rest = torch.tensor([seq[reused:-1]], device=self.device)
            self._forward(
                rest,
                torch.ones((1, len(seq) - 1), dtype=torch.long, device=self.device),
                torch.arange(reused, len(seq) - 1, device=self.device)[None],
                cache,
                tasks,
                snapshot,
            )
        self._remember_prefix(seq[:-1], row.task, snapshot, cache)
        copy_from: int | None = None
        draft_limit = self.lookup_max_draft
        while True:
            room = row.limit - len(row.new_ids) - 1
            draft, source = self._draft(seq, copy_from, min(room, draft_limit))
            feed = torch.tensor([[seq[-1], *draft]], device=self.device)
            total = len(seq) + len(draft)
            positions = torch.arange(len(seq) - 1, total, device=self.device)[None]
            mask = torch.ones((1, total), dtype=torch.long, device=self.device)
            logits = self._forward(feed, mask, positions, cache, tasks, snapshot, all_logits=True)[0]
            predicted = logits.argmax(dim=-1).tolist()
            accepted = 0
            while accepted < len(draft) and draft[accepted] == predicted[accepted]:
                accepted += 1
            self.lookup_stats.update(passes=1, drafted=len(draft), accepted=accepted)
            # Verifying a draft is not free on CPU: grow the window while copies hold, shrink it when they break.
            if draft and accepted == len(draft):
                draft_limit = min(self.lookup_max_draft, 2 * draft_limit)
            elif draft:
                draft_limit = max(self.lookup_min_draft, 2 * accepted)
            if len(draft) > accepted:
                cache.crop(-(len(draft) - accepted))
            decided = [*draft[:accepted], predicted[accepted]]
            for token in decided:
                if self._accept(row, token, params):
                    return
                seq.append(token)
            copy_from = source + accepted + 1 if source is not None and accepted == len(draft) else None


def _bank_rows(keys: Sequence[TaskKey | None] | None, snapshot: BankView | None, count: int) -> list[int]:
    """Each prompt's bank row (-1 = base): the keys mapped through the pinned snapshot."""
    if keys is None or all(key is None for key in keys):
        return [BASE_TASK] * count
    if snapshot is None:
        task, version = next(key for key in keys if key is not None)
        raise ValueError(f"a prompt is routed to {task!r} v{version}, but the runtime has no Share bank")
    return [int(row) for row in snapshot.rows_for(keys)]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto``: bfloat16 on GPUs and on CPUs with native bf16 matmuls (AVX512-BF16/AMX); float32 elsewhere:
    on a plain AVX2 CPU bf16 matmuls are emulated, so prefill, batched decoding and prompt-lookup verification
    (the agent's workload) run slower in bf16 even though it reads half the bytes (docs/runtime.md)."""
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(names)}")
    if dtype == "float16" and not device.startswith("cuda"):
        raise ValueError("float16 is only supported on CUDA; use bfloat16 or float32 on CPU")
    return names[dtype]


def cpu_has_native_bf16() -> bool:
    flags = cpu_info().flags
    return "avx512_bf16" in flags or "amx_bf16" in flags
