"""Building the pieces from settings, in one place for the CLI, the daemon and the jobs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.loop import DEFAULT_OUTPUT_FORMAT, Strategy
from agent.sandbox import Sandbox, SandboxConfig, SandboxUnavailable
from service.settings import Settings

if TYPE_CHECKING:
    from learner.runtime import GenerationParams, ModelRuntime


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
    runtime: ModelRuntime, params: GenerationParams, snapshot: Any = None
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The fix loop's ``generate(prompts, row_tasks)`` and ``sample(prompts, row_tasks, seed)`` over one
    runtime; ``snapshot`` pins the Share bank snapshot both use (None: the runtime's current one)."""
    from dataclasses import replace

    def generate(prompts: list[list[dict[str, str]]], row_tasks: list[int] | None) -> Any:
        return runtime.generate(prompts, params, row_tasks, snapshot=snapshot)

    def sample(prompts: list[list[dict[str, str]]], row_tasks: list[int] | None, seed: int) -> Any:
        sampled = replace(params, temperature=0.7, top_p=0.95, seed=seed, prompt_lookup=False)
        return runtime.generate(prompts, sampled, row_tasks, snapshot=snapshot)

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
