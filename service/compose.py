"""Building the pieces from settings, in one place for the CLI, the daemon and the jobs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from agent.diagnostics import Diagnostic
from agent.loop import DEFAULT_OUTPUT_FORMAT, FixLoop, Strategy
from agent.sandbox import Sandbox, SandboxConfig, SandboxUnavailable
from router import Route, TaskRouter, make_route_fn
from service.settings import Settings

if TYPE_CHECKING:
    from learner.routing import TaskKey
    from learner.runtime import GenerationParams, ModelRuntime
    from learner.share.bank import BankSnapshot


class CompositionError(RuntimeError):
    """A piece could not be built from the settings; the message says how to fix it."""


def make_sandbox(settings: Settings) -> Sandbox:
    config = SandboxConfig(**settings.sandbox.model_dump(), cache_dir=settings.sandbox_cache_dir)
    try:
        return Sandbox(config)
    except SandboxUnavailable as exc:
        raise CompositionError(str(exc)) from exc


# transformers initialises weights under process-global patches (meta device, skipped init), so two loads in
# one process at once corrupt each other ("Cannot copy out of meta tensor"). The live model and the night's
# private copy can both be loading at start-up: serialise them.
_LOAD_LOCK = threading.Lock()


def load_runtime(settings: Settings) -> ModelRuntime:

    with _LOAD_LOCK:
        return _load(settings)


def _load(settings: Settings) -> ModelRuntime:
    from learner.runtime import ModelRuntime

    return ModelRuntime.load(
        settings.model,
        dtype=settings.model_dtype,
        device=settings.device,
        threads=settings.threads,
        cache_dir=str(settings.model_cache_dir),
        weights=settings.model_weights,
    )


def generation_params(settings: Settings) -> GenerationParams:
    from learner.runtime import GenerationParams

    return GenerationParams(
        max_new_tokens=settings.agent.max_new_tokens,
        temperature=0.0,
        prompt_lookup=settings.agent.prompt_lookup,
    )


def model_fns(
    runtime: ModelRuntime,
    params: GenerationParams,
    snapshot: Any = None,
    sample_length_cap: float | None = None,
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The fix loop's ``generate(prompts, keys)`` and ``sample(prompts, keys, seed)`` over one runtime (a
    key: (task, version), None = base); ``snapshot`` pins the Share bank snapshot both map the keys through
    (None: the runtime's current one); ``sample_length_cap``: the samples' ``prompt_length_cap``."""

    def generate(prompts: list[list[dict[str, str]]], keys: list[TaskKey | None] | None) -> Any:
        return runtime.generate(prompts, params, keys, snapshot=snapshot)

    def sample(prompts: list[list[dict[str, str]]], keys: list[TaskKey | None] | None, seed: int) -> Any:
        sampled = replace(
            params,
            temperature=0.7,
            top_p=0.95,
            seed=seed,
            prompt_lookup=False,
            prompt_length_cap=sample_length_cap,
        )
        return runtime.generate(prompts, sampled, keys, snapshot=snapshot)

    return generate, sample


def serving_strategy(
    settings: Settings, max_attempts: int | None = None, hints: bool | None = None
) -> Strategy:
    """The strategy the daemon uses for clients and the day job: the loop with the suggestion first pass."""
    return Strategy(
        "serve",
        max_attempts=max_attempts if max_attempts is not None else settings.agent.max_attempts,
        suggestions_first=settings.agent.suggestions_first,
        hints=settings.agent.hints if hints is None else hints,
        output_format=DEFAULT_OUTPUT_FORMAT,
        best_of=settings.agent.best_of,
        sample_from=settings.agent.sample_from,
    )


def route_fn(router: TaskRouter, snapshot: BankSnapshot | None) -> Callable[[Sequence[Diagnostic]], Route]:
    """Diagnostics → the task they route to and that task's version in ``snapshot`` (the Share bank
    snapshot pinned for one fix loop; None or a task it lacks: the base model)."""
    return make_route_fn(router, snapshot.versions if snapshot is not None else {})


def build_fix_loop(
    runtime: ModelRuntime | None,
    settings: Settings,
    sandbox: Sandbox,
    *,
    snapshot: BankSnapshot | None = None,
    router: TaskRouter | None = None,
    max_new_tokens: int | None = None,
    prompt_lookup: bool | None = None,
    wrap_generate: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
    deadline: float | None = None,
) -> FixLoop:
    """THE fix loop, for the daemon's requests, the day job, the night's sampling and gate, ``dreamfix fix``
    and ``dreamfix eval``: greedy + sampled generation over ``runtime`` and routes read from ``snapshot``
    (pin one per loop; the daemon's and the CLI's come from the active versions in the database).
    ``runtime`` None builds a loop for strategies that need no model (it raises if asked for one);
    ``wrap_generate`` wraps the greedy ``generate`` (``dreamfix eval`` replays recorded replies through it)."""
    wrap = wrap_generate or (lambda fn: fn)
    route = route_fn(router or settings.router.task_router(), snapshot)
    workers = settings.sandbox.max_concurrency
    if runtime is None:

        def no_model(prompts: list[list[dict[str, str]]], keys: list[TaskKey | None] | None) -> list[Any]:
            raise RuntimeError("this strategy needs no model, yet the loop asked for one")

        return FixLoop(sandbox, wrap(no_model), route, None, check_workers=workers)
    params = generation_params(settings)
    if max_new_tokens is not None:
        params = replace(params, max_new_tokens=max_new_tokens)
    if prompt_lookup is not None:
        params = replace(params, prompt_lookup=prompt_lookup)
    if deadline is not None:  # a time.monotonic() instant: decoding stops there (the request's budget)
        params = replace(params, deadline=deadline)
    generate, sample = model_fns(runtime, params, snapshot)
    return FixLoop(sandbox, wrap(generate), route, runtime.model_id, sample=sample, check_workers=workers)
