"""The night: verified fixes → training data per task → Share coefficients → gate → promotion.

1. Data. Train-split koans (their reference fixes), fixes verified by the sandbox during the day and for
   clients, and (optionally) verified generator draws. Anything whose text matches an eval koan is dropped
   and counted: the frozen eval set never leaks into training. Every pair is turned into (messages, answer)
   by ``agent.prompt.training_example`` — the same prompt builder inference uses.
2. Tasks. Each pair is routed by the router from the sandbox's diagnostics of its broken program, so a task's
   training data is exactly what that task's coefficients will be asked to fix.
3. Training. No basis yet: one LoRA seed per task (``TrainConfig.seed_steps_for`` its examples: with
   ``night.seed_epochs`` enough steps to see them all), Phase 1 → bases, analytic coefficients. Basis present:
   Phase 2 per task in the frozen bases.
4. Gate, on a private copy of the model: served version and candidate run the same verified gate-pool
   problems (agent/pools.py, held-out generator seeds) with the gate strategy, and the candidate is promoted
   only on ``service.gate.paired_gate``'s decision (one-sided paired sign test, minimum net gain, per-family
   loss cap), stored as ``paired_gate`` in the version's gate JSON and the run summary (with the per-problem
   outcomes it decided on, ``gate_outcomes``, for pairing after the fact). The frozen eval koans
   are still run and reported (``koans_passed``) but never decide. With a one-shot gate (the default) only
   problems routed to the candidate's task can change — every other row runs bit-identical coefficients — so
   only those are re-run; with a multi-attempt gate everything is re-run (routes can move between attempts).
   For the same reason the served configuration's outcomes after the night's promotions are known (served's,
   with each promoted candidate's where it was run): a one-shot night records them with a fingerprint of
   everything they depend on (``served_gate_after``, ``gate_fingerprint``), and a later night that serves the
   same configuration reuses them instead of re-running its baseline on the gate pool
   (``night.reuse_gate_baseline``; greedy decoding and a deterministic pool draw make them the same).
5. Promotion: rows, statuses and the route epoch change in one transaction at the very end; replicas (and
   this process) hot-swap on the epoch. A rejected version is kept with its reason.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.dataset import verify_examples
from agent.generators import near_any, normalize, registry
from agent.koans import Koan, eval_koans, train_koans
from agent.loop import DEFAULT_OUTPUT_FORMAT, Strategy
from agent.pools import POOL_SIZE, Pools, build_pools
from agent.problems import Problem
from agent.prompt import build_messages, prompt_hash
from agent.sandbox import Job, Sandbox
from learner.heap import release_free_heap
from service.compose import generation_params, model_fns, route_fn
from service.db.repositories import (
    AdapterRepository,
    BasisRepository,
    EpisodeRepository,
    MetricRepository,
    RouteStateRepository,
    RunRepository,
)
from service.db.session import Database
from service.episode_examples import EpisodeAttempt, episode_examples
from service.gate import GateConfig, paired_gate
from service.jobs import RunConflict, RunContext
from service.night_progress import NightProgress
from service.self_data import (
    SelfDataStats,
    SelfProblem,
    Target,
    reference_answer,
    self_generated_targets,
)
from service.serving import ServingRuntime
from service.settings import Settings

if TYPE_CHECKING:
    from learner.runtime import ModelRuntime
    from learner.share.config import TrainConfig
    from learner.share.math import TaskCoefficients

Example = tuple[list[dict[str, str]], str]

EVAL_SIMILARITY_LIMIT = 0.9  # a training program this close to an eval koan is treated as that koan


@dataclass(frozen=True)
class Pair:
    source: str
    fixed: str
    origin: str  # koan | client | generated | day
    ref: str
    mode: str = "bin"
    edition: str = "2021"
    tests: str | None = None  # what a sampled fix must also pass (koans, generator draws)
    attempts: tuple[EpisodeAttempt, ...] = ()  # an episode's attempts (service/episode_examples.py)


class EvalGuard:
    """Rejects any training program that is, or nearly is, a frozen eval koan."""

    def __init__(self, evals: Sequence[Koan]) -> None:
        self.ids = {k.id for k in evals}
        self.texts = [normalize(k.broken) for k in evals] + [normalize(k.fixed) for k in evals]
        self.exact = set(self.texts)

    def blocks(self, pair: Pair) -> bool:
        if pair.ref in self.ids:
            return True
        text = normalize(pair.source)
        if text in self.exact or normalize(pair.fixed) in self.exact:
            return True
        return near_any(text, self.texts, EVAL_SIMILARITY_LIMIT)


def collect_pairs(
    ctx: RunContext, sandbox: Sandbox, koans_dir: Path | None = None, pools: Pools | None = None
) -> list[Pair]:
    """Training pairs: train koans, every verified fix (distinct fixes of one program all kept), generator
    draws; minus eval koans (and near copies) and anything that hashes into the gate/test pools."""
    settings = ctx.settings
    evals = eval_koans(koans_dir)
    guard = EvalGuard(evals)
    pools = pools if pools is not None else build_pools(POOL_SIZE, POOL_SIZE, evals)
    pairs = [
        Pair(k.broken, k.fixed, "koan", k.id, k.mode, k.edition, k.tests) for k in train_koans(koans_dir)
    ]
    with ctx.db.session() as s:
        for p in EpisodeRepository(s).verified_fixes():
            if p.final_code and p.final_code != p.source:
                attempts = tuple(
                    EpisodeAttempt(
                        a.attempt, a.strategy, a.note, a.candidate, a.verdict, a.fixed, a.prompt_hash, a.reply
                    )
                    for a in p.attempts
                )
                pairs.append(
                    Pair(p.source, p.final_code, p.origin, p.problem_ref, p.mode, p.edition, None, attempts)
                )
    pairs += generated_pairs(settings.night.generated_examples, sandbox, seed=ctx.run_id)
    kept: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    blocked = in_pools = 0
    for pair in pairs:
        key = (normalize(pair.source), normalize(pair.fixed))
        if key in seen:
            continue
        seen.add(key)
        if pools.blocks(pair.source) or pools.blocks(pair.fixed):
            in_pools += 1
            continue
        if guard.blocks(pair):
            blocked += 1
            continue
        kept.append(pair)
    ctx.summary["pairs"] = len(kept)
    ctx.summary["pairs_blocked_as_eval"] = blocked
    ctx.summary["pairs_blocked_as_pool"] = in_pools
    ctx.log(f"training pairs: {len(kept)} kept, {blocked} dropped as (near) eval koans")
    return kept


def generated_draws(n: int, seed: int) -> list[Any]:
    """``n`` generator draws spread over the families (unverified ``agent.generators.Example``s)."""
    gens = registry()
    if n <= 0 or not gens:
        return []
    rng = random.Random(seed)
    per_family = max(1, n // len(gens))
    return [gens[family](rng) for family in sorted(gens) for _ in range(per_family)]


def generated_pairs(n: int, sandbox: Sandbox, seed: int) -> list[Pair]:
    """``generated_draws``, each re-verified like the dataset (its broken program fails with its codes, its
    fix passes its tests)."""
    draws = generated_draws(n, seed)
    if not draws:
        return []
    problems = verify_examples(sandbox, draws)
    return [
        Pair(e.broken, e.fixed, "generated", f"gen:{e.family}:{e.shape}", e.mode, e.edition, e.tests)
        for e, problem in zip(draws, problems, strict=True)
        if problem is None
    ]


def examples_by_task(
    ctx: RunContext,
    pairs: Sequence[Pair],
    sandbox: Sandbox,
    serving: ServingRuntime,
    progress: NightProgress | None = None,
) -> dict[str, list[tuple[list[dict[str, str]], str]]]:
    """(messages, answer) training examples per routed task. With ``night.self_samples`` = k > 0 the targets
    are self-generated and verified (service/self_data.py): the model's own verified greedy reply, else up to
    k distinct verified sampled replies word for word, else the reference fix with a cause sentence."""
    settings = ctx.settings
    # the router's tasks: a replay buffer of keys another grouping made (router.grouping changed) is not
    # trained, since nothing routes to them
    wanted = set(settings.night.tasks or serving.router.tasks)
    results = sandbox.check_many([Job(p.source, p.mode, p.edition) for p in pairs])
    snapshot = serving.pinned_snapshot()
    route = route_fn(serving.router, snapshot)
    routed: list[tuple[str, SelfProblem]] = []
    routed_pairs: list[Pair] = []
    for pair, result in zip(pairs, results, strict=True):
        if result.ok or not result.diagnostics:
            continue
        r = route(result.diagnostics)
        if r.task is None or r.task not in wanted:
            continue
        problem = SelfProblem(
            pair.source, result.diagnostics, pair.fixed, pair.mode, pair.edition, pair.tests, r.key
        )
        routed.append((r.task, problem))
        routed_pairs.append(pair)
    problems = [p for _, p in routed]
    targets = training_targets(ctx, problems, sandbox, serving, snapshot, progress)
    add_episode_replies(ctx, routed_pairs, targets, sandbox)
    grouped: dict[str, list[tuple[list[dict[str, str]], str]]] = defaultdict(list)
    own: dict[str, list[tuple[list[dict[str, str]], str]]] = defaultdict(list)
    for (task, _), problem_targets in zip(routed, targets, strict=True):
        grouped[task].extend((t.messages, t.answer) for t in problem_targets)
        own[task].extend((t.messages, t.answer) for t in problem_targets if t.kind != "reference")
    return with_replay(ctx, grouped, wanted, own)


def with_replay(
    ctx: RunContext,
    grouped: Mapping[str, list[Example]],
    wanted: set[str] | None,
    own: Mapping[str, list[Example]] | None = None,
) -> dict[str, list[Example]]:
    """Tonight's examples per task ∪ the task's replay buffer (learner/replay.py, ``night.replay_cap`` per
    task, 0 = off): tonight's first — the model's own verified replies (``own``: greedy, sampled, episode)
    before reference targets — and replayed ones fill up to ``max_examples_per_task``. Tonight's are added
    to the buffer even when the task is still below ``min_examples_per_task``, so it grows to enough."""
    from learner.replay import ReplayBuffer, mix

    night = ctx.settings.night
    buffer = ReplayBuffer(ctx.settings.data_dir / "replay", night.replay_cap)
    groups = set(grouped) | {g for g in buffer.groups() if wanted is None or g in wanted}
    out: dict[str, list[Example]] = {}
    replay: dict[str, dict[str, int]] = {}
    for task in sorted(groups):
        new = grouped.get(task, [])
        old = buffer.replayed(task, new) if night.replay_cap else []
        size = buffer.add(task, new, ctx.run_id) if new else len(buffer.load(task))
        if len(new) + len(old) < night.min_examples_per_task:
            ctx.log(f"task {task}: {len(new)} new + {len(old)} replayed examples, below the minimum; skipped")
            continue
        mine = (own or {}).get(task, [])
        out[task] = mix(new, old, night.max_examples_per_task, random.Random(f"{ctx.run_id}:{task}"), mine)
        replay[task] = {
            "new": len(new),
            "own": len(mine),
            "replayed": len(out[task]) - min(len(new), len(out[task])),
            "buffer": size,
        }
    ctx.summary["examples"] = {t: len(v) for t, v in out.items()}
    ctx.summary["replay"] = replay
    ctx.log(f"examples per task: {ctx.summary['examples']}; replay: {replay}")
    return out


def add_episode_replies(
    ctx: RunContext, pairs: Sequence[Pair], targets: Sequence[list[Target]], sandbox: Sandbox
) -> None:
    """Each episode's verified model replies, with the exact prompt they were generated from, join their
    problem's targets (service/episode_examples.py); counted in the summary's ``episode_replies``."""
    verified = kept = 0
    for pair, problem_targets in zip(pairs, targets, strict=True):
        if not pair.attempts:
            continue

        def check(program: str, pair: Pair = pair) -> Sequence[Any]:
            return sandbox.check(program, pair.mode, pair.edition).diagnostics

        examples, missed = episode_examples(pair.source, pair.attempts, check)
        verified += len(examples) + missed
        kept += len(examples)
        have = {(prompt_hash(t.messages), t.answer) for t in problem_targets}
        for messages, reply in examples:
            if (prompt_hash(messages), reply) not in have:  # self-data may have asked the same already
                problem_targets.append(Target(messages, reply, "episode"))
    if verified:
        ctx.summary["episode_replies"] = {
            "verified": verified,
            "kept": kept,
            "prompt_not_rebuilt": verified - kept,
        }


#: Problems per self-data batch: the progress and wall-budget granularity of the data stage. 8 fills one
#: greedy micro-batch (the runtime's batch size) and their samples (k per greedy failure) fill whole ones; a
#: chunk is never interrupted, and a 16-problem chunk of the default model took 580 s on 2 cores (the budget
#: overran by most of one, and progress stood still that long: docs/learning.md, "First real-model nights").
SELF_DATA_CHUNK = 8


def reference_targets(problems: Sequence[SelfProblem], settings: Settings) -> list[list[Target]]:
    """Each problem's reference fix as its one target, in the serving reply's shape."""
    return [
        [
            Target(
                build_messages(
                    p.source, p.diagnostics, hints=settings.agent.hints, output_format=DEFAULT_OUTPUT_FORMAT
                ),
                reference_answer(p, DEFAULT_OUTPUT_FORMAT),
                "reference",
            )
        ]
        for p in problems
    ]


def training_targets(
    ctx: RunContext,
    problems: Sequence[SelfProblem],
    sandbox: Sandbox,
    serving: ServingRuntime,
    snapshot: Any,
    progress: NightProgress | None,
) -> list[list[Target]]:
    """Self-generated, verified targets (``night.self_samples`` = k > 0), in chunks of SELF_DATA_CHUNK
    problems; past the data stage's budget the rest keep their reference target. k = 0: references only."""
    settings = ctx.settings
    k = settings.night.self_samples
    if k <= 0 or serving.runtime is None:
        return reference_targets(problems, settings)
    if progress is not None:
        progress.stage("data", len(problems))
    generate, sample = night_model_fns(serving, snapshot)
    targets: list[list[Target]] = []
    parts: list[SelfDataStats] = []
    for start in range(0, len(problems), SELF_DATA_CHUNK):
        chunk = problems[start : start + SELF_DATA_CHUNK]
        if progress is not None and progress.over_budget():
            progress.stopped(f"self-data sampling ({len(problems) - start} problems keep the reference)")
            targets += reference_targets(problems[start:], settings)
            break
        chunk_targets, chunk_stats = self_generated_targets(
            chunk,
            sandbox,
            generate,
            sample,
            k=k,
            seed=ctx.run_id * 1_000_003 + start * k,
            hints=settings.agent.hints,
            output_format=DEFAULT_OUTPUT_FORMAT,
        )
        targets += chunk_targets
        parts.append(chunk_stats)
        if progress is not None:
            progress.advance(len(chunk))
    stats = SelfDataStats.combined(parts, problems=len(problems))
    ctx.summary["self_data"] = stats.as_json()
    ctx.log(f"self-generated data: {stats.as_json()}")
    return targets


# ---------------------------------------------------------------------------------------------- gate
@dataclass
class EvalSet:
    koans: list[Koan]
    task_of: dict[str, str | None]  # koan id → task the router picks from its original diagnostics

    def of_task(self, task: str) -> list[Koan]:
        return [k for k in self.koans if self.task_of[k.id] == task]


#: The night asks many problems at once, so its greedy replies are decoded in batches rather than one by one
#: with prompt lookup (serving's latency path). Same text: int8 rows are quantized per token, so a row decodes
#: alike alone and in a batch (tests/test_quant.py, tests/test_night.py); batch 8 decodes ~6× the tokens per
#: second of batch 1 on 2 cores (docs/runtime.md), and the gate and self-data are throughput-bound.
NIGHT_PROMPT_LOOKUP = False


#: The self-data samples stop at their prompt's length (``GenerationParams.prompt_length_cap``): a verified
#: reply is a cause sentence and the program, shorter than a prompt holding the program, the diagnostics and
#: the instructions, so a longer sample is one that lost its way, and it held its batch for up to
#: ``agent.max_new_tokens`` (768) steps. Greedy replies (the baseline and the gate measure serving) are not capped.
NIGHT_SAMPLE_LENGTH_CAP = 1.0


def night_model_fns(serving: ServingRuntime, snapshot: Any) -> tuple[Any, Any]:
    """Greedy ``generate`` (batched: ``NIGHT_PROMPT_LOOKUP``) and seeded ``sample`` (capped at the prompt's
    length: ``NIGHT_SAMPLE_LENGTH_CAP``) over the night's model with serving's other decode settings."""
    assert serving.runtime is not None
    params = replace(generation_params(serving.settings), prompt_lookup=NIGHT_PROMPT_LOOKUP)
    return model_fns(serving.runtime, params, snapshot, sample_length_cap=NIGHT_SAMPLE_LENGTH_CAP)


def eval_set(ctx: RunContext, sandbox: Sandbox, serving: ServingRuntime, koans_dir: Path | None) -> EvalSet:
    koans = eval_koans(koans_dir)
    if ctx.settings.night.eval_limit is not None:
        koans = koans[: ctx.settings.night.eval_limit]
    results = sandbox.check_many([Job(k.broken, k.mode, k.edition) for k in koans])
    task_of = {k.id: serving.router.route(r.diagnostics).task for k, r in zip(koans, results, strict=True)}
    return EvalSet(koans, task_of)


def gate_strategy(settings: Settings) -> Strategy:
    return Strategy(
        "gate",
        max_attempts=settings.night.gate_max_attempts,
        suggestions_first=False,
        hints=settings.agent.hints,
        output_format=DEFAULT_OUTPUT_FORMAT,
        sample_on_stall=settings.night.gate_max_attempts > 1,
    )


EVAL_CHUNK = 32  # problems per loop run when the night reports progress


def evaluate(
    serving: ServingRuntime,
    koans: Sequence[Koan],
    strategy: Strategy,
    progress: NightProgress | None = None,
) -> dict[str, bool]:
    return evaluate_problems(serving, [Problem.from_koan(k) for k in koans], strategy, progress)


def evaluate_problems(
    serving: ServingRuntime,
    problems: Sequence[Problem],
    strategy: Strategy,
    progress: NightProgress | None = None,
) -> dict[str, bool]:
    """problem id → fixed, with the serving fix loop (``ServingRuntime.make_loop``: compose.build_fix_loop)
    over the pinned snapshot. With ``progress``: in chunks of EVAL_CHUNK problems, each counted as done."""
    if not problems:
        return {}
    loop = serving.make_loop(serving.pinned_snapshot(), prompt_lookup=NIGHT_PROMPT_LOOKUP)
    step = EVAL_CHUNK if progress is not None else len(problems)
    out: dict[str, bool] = {}
    for start in range(0, len(problems), step):
        chunk = list(problems[start : start + step])
        out.update({r.problem_id: r.fixed for r in loop.run(chunk, strategy)})
        if progress is not None:
            progress.advance(len(chunk))
    return out


@dataclass
class GatePool:
    """The verified gate-pool problems, their families and the task each routes to."""

    problems: list[Problem]
    family_of: dict[str, str]
    task_of: dict[str, str | None]

    def of_task(self, task: str) -> list[Problem]:
        return [p for p in self.problems if self.task_of[p.id] == task]


def gate_problems(sandbox: Sandbox, drawn: Sequence[Any]) -> list[Problem]:
    """The gate pool's drawn examples (``Pools.gate``) that verify (broken fails with its codes, fix passes its
    tests) as problems, ``gate-<index in the draw>-<family>``: the ids the night's summary records outcomes
    under (``gate_outcomes``), so an evaluation after the fact (tests/benchmarks/recipe_sweep.py ``--pool
    gate``) pairs with them."""
    verdicts = verify_examples(sandbox, drawn)
    return [
        Problem(f"gate-{i:04d}-{e.family}", e.broken, e.mode, e.edition, e.tests, e.family)
        for i, (e, why) in enumerate(zip(drawn, verdicts, strict=True))
        if why is None
    ]


def gate_pool(ctx: RunContext, sandbox: Sandbox, serving: ServingRuntime, pools: Pools) -> GatePool:
    """The verified gate pool (``gate_problems``), each problem's family and the task it routes to."""
    problems = gate_problems(sandbox, pools.gate)
    results = sandbox.check_many([Job(p.source, p.mode, p.edition) for p in problems])
    task_of = {p.id: serving.router.route(r.diagnostics).task for p, r in zip(problems, results, strict=True)}
    # size: the night.gate_pool the pool was drawn with (the draw is deterministic: recipe_sweep redraws it)
    ctx.summary["gate_pool"] = {
        "size": ctx.settings.night.gate_pool,
        "drawn": len(pools.gate),
        "verified": len(problems),
    }
    ctx.log(f"gate pool: {len(problems)} of {len(pools.gate)} drawn problems verify")
    return GatePool(problems, {p.id: p.family or "?" for p in problems}, task_of)


def gate_config(settings: Settings) -> GateConfig:
    night = settings.night
    return GateConfig(
        alpha=night.gate_alpha,
        min_net_gain=night.gate_min_net_gain,
        max_family_net_loss=night.gate_max_family_net_loss,
    )


def paired_decision(
    koan_report: dict[str, Any],
    served: Mapping[str, bool],
    candidate: Mapping[str, bool],
    pool: GatePool,
    config: GateConfig,
) -> dict[str, Any]:
    """The promotion decision is the paired gate's on the gate pool; the eval-koan comparison rides along
    report-only (``koans_passed`` is what the old koan gate would have said)."""
    report = {k: v for k, v in koan_report.items() if k not in ("passed", "reason")}
    report["koans_passed"] = koan_report["passed"]
    report["koans_reason"] = koan_report["reason"]
    if not pool.problems:
        return {**report, "passed": False, "reason": "the gate pool is empty", "paired_gate": None}
    result = paired_gate(served, {**served, **candidate}, pool.family_of, config)
    return {**report, "passed": result.promoted, "reason": result.reason, "paired_gate": result.as_json()}


#: ``gate_outcomes["candidates"]``'s key for a Phase 3 merge: every task's candidate is one configuration there.
MERGE_CANDIDATE = "merge"


def gate_outcomes(ctx: RunContext, served: Mapping[str, bool]) -> dict[str, dict[str, bool]]:
    """The night's per-problem gate outcomes in its summary, so a candidate can be paired after the fact:
    ``summary["gate_outcomes"] = {"served": {problem id: fixed}, "candidates": {task: {problem id: fixed}}}``
    over every verified gate-pool problem. A candidate's are what ``paired_gate`` compared: its own outcome
    where it was run (a one-shot gate runs only the problems routed to its task) and the served one elsewhere
    (exact for a one-shot gate). A Phase 3 merge is one candidate, under ``MERGE_CANDIDATE``. Returns the
    candidates' dict, for the caller to fill."""
    candidates: dict[str, dict[str, bool]] = {}
    ctx.summary["gate_outcomes"] = {"served": dict(served), "candidates": candidates}
    return candidates


# ------------------------------------------------------------------------------------ gate baseline
#: Bump when the agent or prompt code changes what the model would reply to a gate problem, or how a reply is
#: judged (agent/prompt.py, agent/loop.py, the validation judge): the nights' recorded gate baselines
#: (``served_gate_after``) then stop matching (``gate_fingerprint``) and the next night re-runs its own.
GATE_OUTCOMES_FORMAT = 1

#: The sandbox settings a verdict can depend on (limits a fix may hit); the rest (concurrency, cache size) only
#: change speed.
_VERDICT_SANDBOX_SETTINGS = (
    "jail",
    "cpu_seconds",
    "wall_seconds",
    "memory_mb",
    "max_processes",
    "max_file_bytes",
    "max_output_bytes",
    "max_source_bytes",
)

#: How many recent night runs the baseline reuse looks through for a matching ``served_gate_after``.
GATE_BASELINE_LOOKBACK = 50


def gate_settings(settings: Settings) -> dict[str, Any]:
    """The settings a gate outcome depends on: the gate strategy (``gate_strategy``: attempts, hints, output
    format, ...), the greedy decoding the night's loop runs (``generation_params`` with
    ``NIGHT_PROMPT_LOOKUP``), the router (which task, so which adapter, a problem runs) and the sandbox limits
    a verdict can hit. Not ``gate_config``: alpha and the net-gain and family caps decide on the outcomes,
    they do not change them."""
    params = replace(generation_params(settings), prompt_lookup=NIGHT_PROMPT_LOOKUP)
    sandbox = settings.sandbox.model_dump()
    return {
        "strategy": asdict(gate_strategy(settings)),
        "generation": asdict(params),
        "router": {
            "grouping": settings.router.grouping,
            "confidence_threshold": settings.router.confidence_threshold,
        },
        "sandbox": {key: sandbox[key] for key in _VERDICT_SANDBOX_SETTINGS},
    }


def served_identity(versions: Mapping[str, int], basis_id: str | None) -> dict[str, Any]:
    """What is served: ``{task: version}`` and the basis they live in. With no task served every row runs the
    base model, whatever basis the bank holds, so the basis is then left out (None)."""
    served = {task: int(versions[task]) for task in sorted(versions)}
    return {"versions": served, "basis_id": basis_id if served else None}


def platform_identity(runtime: ModelRuntime | None = None) -> dict[str, Any]:
    """What the arithmetic runs on: torch's version and intra-op threads, the CPU's model name and the flags
    that pick its float/int8 kernels (``learner.cpu.KERNEL_FLAGS``), and a CUDA device's name."""
    import torch

    from learner.cpu import cpu_info

    cpu = cpu_info()
    out: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": {"model": cpu.model, "flags": cpu.kernel_flags()},
    }
    if runtime is not None and runtime.device.type == "cuda":
        out["cuda"] = torch.cuda.get_device_name(runtime.device)
    return out


def model_identity(runtime: ModelRuntime, settings: Settings) -> dict[str, str]:
    """The base model as loaded: its id, the model setting it came from, its float dtype, its linear layers'
    weight format (``learner.quant.weight_format``: int8 or float) and its device."""
    from learner.quant import weight_format

    model = runtime.model
    dtype = getattr(model, "dtype", None)
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    return {
        "id": runtime.model_id,
        "setting": settings.model,
        "dtype": str(dtype),
        "weights": weight_format(model),
        "device": str(runtime.device),
    }


def gate_fingerprint(
    *,
    model: Mapping[str, str],
    served: Mapping[str, int],
    basis_id: str | None,
    settings: Settings,
    problems: Iterable[Problem],
    platform: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything the served configuration's outcomes on the gate pool depend on, as JSON: the format of the
    agent's replies (``GATE_OUTCOMES_FORMAT``), the base model (``model_identity``), what is served
    (``served_identity``), the gate's settings (``gate_settings``), the verified gate problems
    (``problems_identity``) and the platform (``platform_identity``). Equal fingerprints, greedy one-shot
    decoding: equal outcomes. ``fingerprint_sha256`` hashes it."""
    return {
        "format": GATE_OUTCOMES_FORMAT,
        "model": dict(model),
        "served": served_identity(served, basis_id),
        "gate": gate_settings(settings),
        "problems": problems_identity(problems),
        "platform": dict(platform),
    }


def problems_identity(problems: Iterable[Problem]) -> dict[str, Any]:
    """The verified gate problems: their sorted ids (the draw is deterministic for one ``night.gate_pool``) and
    a sha256 over their contents (program, mode, edition, tests), so that a generator that changed what an id
    holds does not pass for the same pool."""
    ordered = sorted(problems, key=lambda p: p.id)
    digest = hashlib.sha256()
    for p in ordered:
        digest.update(json.dumps([p.id, p.source, p.mode, p.edition, p.tests]).encode("utf-8"))
    return {"ids": [p.id for p in ordered], "sha256": digest.hexdigest()}


def fingerprint_sha256(fingerprint: Mapping[str, Any]) -> str:
    """sha256 of the fingerprint's canonical JSON (sorted keys, no spaces, ASCII)."""
    text = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def live_gate_fingerprint(
    shadow: ServingRuntime, settings: Settings, problems: Sequence[Problem]
) -> dict[str, Any]:
    """``gate_fingerprint`` of what ``shadow`` serves now (its bank's snapshot after ``sync``: the database's
    active versions, so a rollback or promotion between nights is seen) on these gate problems."""
    runtime = shadow.runtime
    assert runtime is not None
    return gate_fingerprint(
        model=model_identity(runtime, settings),
        served=shadow.active_versions(),
        basis_id=shadow.bank.basis_id if shadow.bank is not None else None,
        settings=settings,
        problems=problems,
        platform=platform_identity(runtime),
    )


def reusable_gate_baseline(
    db: Database, fingerprint: str, problem_ids: Collection[str]
) -> tuple[int, dict[str, bool]] | None:
    """The newest succeeded night (of the last ``GATE_BASELINE_LOOKBACK``) whose ``served_gate_after`` has this
    fingerprint and outcomes for exactly these problems: (its run id, its outcomes); None when there is none."""
    wanted = set(problem_ids)
    with db.session() as s:
        for run in RunRepository(s).recent("night", limit=GATE_BASELINE_LOOKBACK):
            if run.status != "succeeded":
                continue
            after = (run.summary or {}).get("served_gate_after")
            if not isinstance(after, dict) or after.get("fingerprint") != fingerprint:
                continue
            outcomes = after.get("outcomes")
            if (
                isinstance(outcomes, dict)
                and set(outcomes) == wanted
                and all(isinstance(ok, bool) for ok in outcomes.values())
            ):
                return run.id, dict(outcomes)
    return None


def served_outcomes_after(
    served: Mapping[str, bool], runs: Mapping[str, Mapping[str, bool]], promoted: Iterable[str]
) -> dict[str, bool]:
    """The gate-pool outcomes of what is served after the night's promotions: the served outcomes, with each
    promoted candidate's own outcomes where it was run (``runs``: a one-shot gate runs a task's candidate on
    the problems routed to that task, every other row running bit-identical coefficients; a merge runs on
    every problem). Two promoted candidates run on one problem, or a run outside the pool, is an error: their
    outcomes would not be the served configuration's."""
    out = dict(served)
    claimed: dict[str, str] = {}
    for name in promoted:
        for problem_id, fixed in runs[name].items():
            if problem_id not in out:
                raise ValueError(f"candidate {name!r} ran {problem_id!r}, which is not in the gate pool")
            if problem_id in claimed:
                raise ValueError(f"candidates {claimed[problem_id]!r} and {name!r} both ran {problem_id!r}")
            claimed[problem_id] = name
            out[problem_id] = fixed
    return out


def served_gate_after(
    fingerprint: Mapping[str, Any],
    versions: Mapping[str, int],
    basis_id: str | None,
    outcomes: Mapping[str, bool],
) -> dict[str, Any]:
    """``summary["served_gate_after"]``: the night's baseline ``fingerprint`` with what is served after its
    promotions (``versions`` in ``basis_id``) in place of what was served before, hashed, with that
    configuration's gate-pool ``outcomes`` (``served_outcomes_after``): what a later night with the same
    fingerprint reuses instead of re-running (``reusable_gate_baseline``)."""
    after = {**fingerprint, "served": served_identity(versions, basis_id)}
    return {"fingerprint": fingerprint_sha256(after), "served": after["served"], "outcomes": dict(outcomes)}


def pass_rate(results: Mapping[str, bool], ids: Sequence[str]) -> float | None:
    return sum(results[i] for i in ids) / len(ids) if ids else None


def gate_decision(
    task: str, evals: EvalSet, baseline: Mapping[str, bool], candidate: Mapping[str, bool]
) -> dict[str, Any]:
    ids = [k.id for k in evals.of_task(task)]
    before, after = pass_rate(baseline, ids), pass_rate(candidate, ids)
    regressions = sorted(k for k, ok in baseline.items() if ok and not candidate.get(k, ok))
    improvements = sorted(k for k, ok in candidate.items() if ok and not baseline.get(k, False))
    passed = not regressions and (before is None or (after is not None and after >= before))
    if regressions:
        reason = f"regresses {len(regressions)} eval koan(s): {', '.join(regressions[:8])}"
    elif before is not None and after is not None and after < before:
        reason = f"lowers the task's eval pass rate {before:.3f} → {after:.3f}"
    else:
        reason = "passed the gate"
    return {
        "passed": passed,
        "reason": reason,
        "task_eval_koans": len(ids),
        "task_pass_before": before,
        "task_pass_after": after,
        "regressions": regressions,
        "improvements": improvements,
        "eval_pass_before": pass_rate(baseline, list(baseline)),
        "eval_pass_after": pass_rate({**baseline, **candidate}, list(baseline)),
    }


# ---------------------------------------------------------------------------------------------- night
def train_config(settings: Settings) -> TrainConfig:
    """The night's training recipe from the settings: the one ``TrainConfig`` the experiments reuse
    (``dreamfix experiment run --recipe night``)."""
    from learner.share.config import TrainConfig

    share, night = settings.share, settings.night
    return TrainConfig(
        lora_rank=share.lora_rank,
        target_modules=tuple(share.target_modules),
        seed_steps=night.seed_steps,
        seed_epochs=night.seed_epochs,
        seed_lr=share.seed_learning_rate,
        phase2_steps=share.train_steps,
        phase2_lr=share.learning_rate,
        batch_size=share.batch_size,
        max_length=night.max_length,
        seed=share.seed,
        pseudo_rank=share.pseudo_rank,
        threshold=share.variance_threshold,
        k_cap=share.k_cap,
        copy_weight=night.copy_weight,
        phi=share.phi,
        gradient_checkpointing=night.gradient_checkpointing,
    )


def _step_control(progress: NightProgress, tasks_left: int = 1) -> Any:
    """Training's hooks: progress per step, and a stop at this task's fair share of the stage's remaining
    time (``NightProgress.share_deadline``: the rest of the train stage split evenly over the tasks still to
    train, so a task that finishes early leaves its time to the later ones)."""
    from learner.share.training import StepControl

    until = progress.share_deadline(tasks_left)
    return StepControl(
        on_step=lambda _step, _loss: progress.advance(),
        should_stop=lambda: progress.over_budget() or progress.clock() >= until,
    )


def _note_cut(progress: NightProgress, task: str, steps: int, planned: int) -> None:
    if steps < planned:
        progress.stopped(f"training {task} after {steps} of {planned} steps")


def _params(coeffs: Mapping[str, TaskCoefficients]) -> int:
    return sum(int(c.eb.numel() + c.ea.numel()) for c in coeffs.values())


class Night:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        sandbox: Sandbox,
        runtime_factory: Callable[[], ModelRuntime],
        live: ServingRuntime | None = None,
        koans_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.sandbox = sandbox
        self.factory = runtime_factory
        self.live = live
        self.koans_dir = koans_dir

    def __call__(self, ctx: RunContext) -> dict[str, Any]:
        from service.db.repositories import NightLock

        lock = NightLock(self.db)
        if not lock.acquire():
            raise RunConflict("another replica holds the night lock")
        self._lease: NightLock | None = lock
        night = self.settings.night
        progress = NightProgress(
            ctx,
            budget_s=night.wall_budget_s,
            every_s=night.progress_every_s,
            every_items=night.progress_every_items,
        )
        try:
            summary = self._night(ctx, lock, progress)
            progress.finish()
            return {**summary, **{k: ctx.summary[k] for k in ("budget", "progress", "peak_rss_mb")}}
        finally:
            self._lease = None
            lock.release()
            release_free_heap()  # the night's model and activations, freed, leave the daemon's RSS too

    def release_lease(self) -> None:
        """At shutdown: give the lease back now, so a replica (or this daemon restarted) may run a night."""
        lock = getattr(self, "_lease", None)
        if lock is not None:
            lock.release()

    def _night(self, ctx: RunContext, lock: Any, progress: NightProgress) -> dict[str, Any]:
        from learner.share.artifacts import load_bases, save_bases, save_task_version
        from learner.share.layer import attach_share
        from learner.share.phases import phase1
        from service.db.artifacts import local_artifact

        night = self.settings.night
        train = train_config(self.settings)
        started = time.monotonic()
        # A private model: training and gating never touch the model serving requests.
        shadow = ServingRuntime(self.settings, self.db, self.sandbox, self.factory)
        shadow.runtime = self.factory()
        runtime = shadow.runtime
        model_id = runtime.model_id
        ctx.log(f"night model {model_id} loaded")
        # The served versions, before the self-generated data: expert iteration refines what is served, so
        # each routed problem is asked with its task's served (task, version) key.
        shadow.sync()

        pools = build_pools(night.gate_pool, night.test_pool, eval_koans(self.koans_dir))
        pairs = collect_pairs(ctx, self.sandbox, self.koans_dir, pools)
        data = examples_by_task(ctx, pairs, self.sandbox, shadow, progress)
        lock.renew()
        if not data:
            ctx.log("no task has enough verified examples; nothing to train")
            return {**ctx.summary, "candidates": {}}

        evals = eval_set(ctx, self.sandbox, shadow, self.koans_dir)
        pool = gate_pool(ctx, self.sandbox, shadow, pools)
        strategy = gate_strategy(self.settings)
        adapters_dir = self.settings.adapters_dir
        (adapters_dir / "tasks").mkdir(parents=True, exist_ok=True)

        with self.db.session() as s:
            # The served basis; before anything is served, the newest one (a first night whose candidates
            # were all rejected). A rejected Phase 3 basis is never built upon.
            served_id = RouteStateRepository(s).get().basis_id
            current = BasisRepository(s).get(served_id) if served_id else BasisRepository(s).latest()
            # The basis as stored in the database (the leader may not be the replica that wrote the file).
            basis_path = local_artifact(current, adapters_dir / "db-cache", "basis") if current else None
            latest_basis_run = int((current.meta or {}).get("run_id", 0)) if current else 0

        if basis_path is None:
            # First night: baseline is the base model; seeds → Phase 1.
            baseline, served_gate, fingerprint = self._baseline(ctx, shadow, evals, pool, strategy, progress)
            seeds = self._train_seeds(ctx, data, runtime, train, progress, lock)
            result = phase1(list(seeds.values()), threshold=train.threshold, cap=train.k_cap)
            basis_file = adapters_dir / f"basis-{ctx.run_id}.safetensors"
            basis_id = save_bases(basis_file, result.bases, model_id)
            with self.db.session() as s:
                BasisRepository(s).add(
                    basis_id,
                    str(basis_file),
                    model_id,
                    {
                        "layers": {k: [b.k_beta, b.k_alpha] for k, b in result.bases.items()},
                        "origin": "phase1",
                        "run_id": ctx.run_id,
                    },
                )
            bases = result.bases
            candidates = {task: result.coefficients[task] for task in data}
            ctx.log(f"phase 1: basis {basis_id}, k per layer {self._k_summary(bases)}")
            shadow.bank = attach_share(runtime.model, bases, base_model_id=model_id)
            runtime.bank = shadow.bank
        else:
            basis = load_bases(basis_path)
            basis_id, bases = basis.basis_id, basis.bases
            shadow.sync()  # done before the data; a no-op unless the active versions moved since
            if shadow.bank is None or shadow.bank.basis_id != basis_id:
                shadow.bank = attach_share(runtime.model, bases, base_model_id=model_id)
                runtime.bank = shadow.bank
            baseline, served_gate, fingerprint = self._baseline(ctx, shadow, evals, pool, strategy, progress)
            phase2_results = self._train_phase2(ctx, data, shadow, train, progress, lock)
            candidates = {task: res.coeffs for task, res in phase2_results.items()}

            if self._merge_due(latest_run_id=latest_basis_run):
                return self._merge_night(
                    ctx,
                    shadow,
                    evals,
                    baseline,
                    pool,
                    served_gate,
                    phase2_results,
                    model_id,
                    started,
                    progress,
                    fingerprint,
                )

        bank = shadow.bank
        assert bank is not None
        ctx.summary["eval_pass_baseline"] = pass_rate(baseline, list(baseline))
        ctx.summary["gate_pass_baseline"] = pass_rate(served_gate, list(served_gate))
        outcomes = gate_outcomes(ctx, served_gate)
        config = gate_config(self.settings)
        decisions: dict[str, dict[str, Any]] = {}
        files: dict[str, tuple[int, Path]] = {}
        runs: dict[str, dict[str, bool]] = {}  # each candidate's own gate-pool outcomes, where it was run
        with self.db.session() as s:  # the night lock makes these numbers ours until the promotion
            repo = AdapterRepository(s)
            versions = {task: repo.next_version(task) for task in candidates}
        one_shot = strategy.max_attempts == 1
        progress.stage(
            "gate",
            sum(
                len(evals.of_task(t)) + len(pool.of_task(t))
                if one_shot
                else len(evals.koans) + len(pool.problems)
                for t in candidates
            ),
        )
        for task, coeffs in candidates.items():
            version = versions[task]
            path = save_task_version(
                adapters_dir / "tasks",
                task=task,
                version=version,
                coeffs_by_layer=coeffs,
                basis_id=basis_id,
                base_model_id=model_id,
            )
            files[task] = (version, path)
            previous = bank.coefficients(task) if task in bank.tasks() else None
            previous_version = bank.version(task) if previous is not None else None
            bank.set_task(task, coeffs, version)
            # one-shot: only problems routed to the task can change (every other row runs the same
            # coefficients), so only those are re-run; with more attempts, everything is.
            subset = evals.of_task(task) if one_shot else evals.koans
            results = evaluate(shadow, subset, strategy, progress)
            gate_subset = pool.of_task(task) if one_shot else pool.problems
            gate_results = evaluate_problems(shadow, gate_subset, strategy, progress)
            runs[task] = gate_results
            outcomes[task] = {**served_gate, **gate_results}  # what paired_gate compares
            decisions[task] = paired_decision(
                gate_decision(task, evals, baseline, results), served_gate, gate_results, pool, config
            )
            ctx.log(f"gate {task}@v{version}: {decisions[task]['reason']}")
            if previous is not None and previous_version is not None:
                bank.set_task(task, previous, previous_version)
            else:
                bank.remove_task(task)
            lock.renew()

        promoted = self._record(ctx, candidates, decisions, files, basis_id, model_id)
        if one_shot:
            passed = [t for t in candidates if decisions[t]["passed"]]
            self._served_after(
                ctx,
                fingerprint,
                {t: files[t][0] for t in passed},
                basis_id,
                served_outcomes_after(served_gate, runs, passed),
            )
        if self.live is not None:
            self.live.sync()
        ctx.summary.update(
            {
                "basis_id": basis_id,
                "candidates": {t: f"{t}@v{files[t][0]}" for t in candidates},
                "promoted": promoted,
                "gate": decisions,
                "night_seconds": round(time.monotonic() - started, 1),
            }
        )
        return ctx.summary

    def _baseline(
        self,
        ctx: RunContext,
        shadow: ServingRuntime,
        evals: EvalSet,
        pool: GatePool,
        strategy: Strategy,
        progress: NightProgress,
    ) -> tuple[dict[str, bool], dict[str, bool], dict[str, Any]]:
        """The baseline stage: what ``shadow`` serves now on the eval koans (report-only) and on the gate pool.
        The gate pool's outcomes are reused from an earlier night when the gate is one-shot,
        ``night.reuse_gate_baseline`` is on and a succeeded night recorded them for this very configuration
        (``reusable_gate_baseline``: same ``gate_fingerprint``, same problems), else run. Returns (eval-koan
        outcomes, gate-pool outcomes, the fingerprint), the fingerprint also in ``summary["gate_fingerprint"]``."""
        fingerprint = live_gate_fingerprint(shadow, self.settings, pool.problems)
        digest = fingerprint_sha256(fingerprint)
        ctx.summary["gate_fingerprint"] = {"sha256": digest, "components": fingerprint}
        reused = None
        if strategy.max_attempts == 1 and self.settings.night.reuse_gate_baseline and pool.problems:
            reused = reusable_gate_baseline(self.db, digest, [p.id for p in pool.problems])
        progress.stage("baseline", len(evals.koans) + (0 if reused is not None else len(pool.problems)))
        baseline = evaluate(shadow, evals.koans, strategy, progress)
        if reused is None:
            return baseline, evaluate_problems(shadow, pool.problems, strategy, progress), fingerprint
        run_id, outcomes = reused
        ctx.summary["gate_baseline_reused_from"] = run_id
        ctx.log(
            f"gate baseline: {len(outcomes)} outcomes reused from night #{run_id} (fingerprint {digest[:12]})"
        )
        return baseline, {p.id: outcomes[p.id] for p in pool.problems}, fingerprint

    @staticmethod
    def _served_after(
        ctx: RunContext,
        fingerprint: Mapping[str, Any],
        promoted: Mapping[str, int],
        basis_id: str,
        outcomes: Mapping[str, bool],
        *,
        replaces_all: bool = False,
    ) -> None:
        """``summary["served_gate_after"]`` (``served_gate_after``) for what is served once ``promoted`` (task →
        version, in ``basis_id``) is: the versions served before the night with the promoted ones (all of them
        replaced for a merge), in the night's basis when anything was promoted."""
        before = fingerprint["served"]
        versions = dict(promoted) if replaces_all else {**before["versions"], **promoted}
        basis = basis_id if promoted else before["basis_id"]
        ctx.summary["served_gate_after"] = served_gate_after(fingerprint, versions, basis, outcomes)

    def _train_seeds(
        self,
        ctx: RunContext,
        data: Mapping[str, list[Any]],
        runtime: ModelRuntime,
        train: TrainConfig,
        progress: NightProgress,
        lock: Any,
    ) -> dict[str, Any]:
        """First night: one LoRA seed per task, ``TrainConfig.seed_steps_for`` its examples (``night.seed_steps``,
        or with ``night.seed_epochs`` enough steps to see its examples that many times); a cut train stage is
        shared equally by the tasks left, at least one step each (``_step_control``)."""
        from learner.share.seeds import train_lora_seed

        planned = {task: train.seed_steps_for(len(examples)) for task, examples in data.items()}
        ctx.summary["seed_steps"] = planned
        progress.stage("train", sum(planned.values()))
        seeds = {}
        for i, (task, examples) in enumerate(data.items()):
            steps = planned[task]
            ctx.log(f"LoRA seed {task}: {len(examples)} examples, {steps} steps")
            result = train_lora_seed(
                runtime.model,
                runtime.tokenizer,
                examples,
                task,
                train.seed_config(steps=steps),
                base_model_id=runtime.model_id,
                control=_step_control(progress, len(data) - i),
            )
            _note_cut(progress, task, len(result.losses), steps)
            seeds[task] = result.seed
            release_free_heap()
            lock.renew()
        return seeds

    def _train_phase2(
        self,
        ctx: RunContext,
        data: Mapping[str, list[Any]],
        shadow: ServingRuntime,
        train: TrainConfig,
        progress: NightProgress,
        lock: Any,
    ) -> dict[str, Any]:
        """Phase 2 per task, warm-started from the served version of the task (it lives in this basis: sync
        installed only those), so a night refines what is served instead of starting from noise."""
        from learner.share.phases import max_phi, phase2

        runtime, bank = shadow.runtime, shadow.bank
        assert runtime is not None and bank is not None
        # share.phi temporary directions (such candidates are always merged: _merge_due), capped at k/4 of
        # the basis's smallest layer; 0 when the basis is too narrow for any
        phi = min(train.phi, max_phi(bank.bases))
        if train.phi:
            ctx.summary["phi"] = phi
            if phi != train.phi:
                ctx.log(f"phase 2: share.phi = {train.phi} capped to {phi} (k/4 of the smallest layer)")
        progress.stage("train", train.phase2_steps * len(data))
        results = {}
        for i, (task, examples) in enumerate(data.items()):
            ctx.log(f"phase 2 {task}: {len(examples)} examples, {train.phase2_steps} steps")
            init = bank.coefficients(task) if task in bank.tasks() else None
            if init is not None:
                ctx.summary.setdefault("warm_start", {})[task] = f"{task}@v{bank.version(task)}"
            res = phase2(
                runtime.model,
                runtime.tokenizer,
                bank,
                examples,
                train.phase2_config(phi=phi),
                task=task,
                init=init,
                control=_step_control(progress, len(data) - i),
            )
            _note_cut(progress, task, len(res.losses), train.phase2_steps)
            results[task] = res
            ctx.summary.setdefault("losses", {})[task] = [res.losses[0], res.losses[-1]]
            release_free_heap()
            lock.renew()
        return results

    def _merge_due(self, latest_run_id: int) -> bool:
        """Phase 3 every ``merge_every``-th night in a basis (counting the night that made it and this one), and
        always when φ > 0."""
        share = self.settings.share
        if share.phi > 0:
            return True
        if share.merge_every <= 0:
            return False
        with self.db.session() as s:
            nights = sum(
                1
                for r in RunRepository(s).recent("night", limit=1000)
                if r.status == "succeeded" and r.id >= latest_run_id
            )
        return (nights + 1) % share.merge_every == 0

    def _merge_night(
        self,
        ctx: RunContext,
        shadow: ServingRuntime,
        evals: EvalSet,
        baseline: Mapping[str, bool],
        pool: GatePool,
        served_gate: Mapping[str, bool],
        phase2_results: Mapping[str, Any],
        model_id: str,
        started: float,
        progress: NightProgress,
        fingerprint: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Phase 3: every active task and tonight's candidates re-based into one new basis, gated as ONE
        configuration on the whole eval set (a new basis changes every task), promoted all or nothing."""
        from learner.share.artifacts import save_bases, save_task_version
        from learner.share.phases import merge_bank

        bank = shadow.bank
        assert bank is not None
        share = self.settings.share
        keep = {t for t in bank.tasks() if t not in phase2_results}
        for task in list(bank.tasks()):
            if task not in keep:
                bank.remove_task(task)
        merged = merge_bank(bank, dict(phase2_results), threshold=1.0, cap=share.k_cap)
        errors = {t: round(e, 6) for t, e in merged.report.errors.items()}
        ctx.log(
            f"phase 3: {len(errors)} tasks re-based, worst reconstruction error {merged.report.worst():.3g}"
        )
        adapters_dir = self.settings.adapters_dir
        basis_file = adapters_dir / f"basis-{ctx.run_id}.safetensors"
        basis_id = save_bases(basis_file, merged.bases, model_id)
        with self.db.session() as s:
            BasisRepository(s).add(
                basis_id,
                str(basis_file),
                model_id,
                {"origin": "phase3", "run_id": ctx.run_id, "reconstruction_errors": errors},
            )
            repo = AdapterRepository(s)
            versions = {task: repo.next_version(task) for task in merged.coefficients}
        bank.replace_bases(merged.bases, merged.coefficients, versions)
        strategy = gate_strategy(self.settings)
        progress.stage("gate", len(evals.koans) + len(pool.problems))
        results = evaluate(shadow, evals.koans, strategy, progress)
        gate_results = evaluate_problems(shadow, pool.problems, strategy, progress)
        config = gate_config(self.settings)
        decisions = {
            task: paired_decision(
                gate_decision(task, evals, baseline, results), served_gate, gate_results, pool, config
            )
            for task in merged.coefficients
        }
        passed = all(d["passed"] for d in decisions.values())
        reason = (
            "passed the gate"
            if passed
            else "merge rejected: "
            + "; ".join(f"{t}: {d['reason']}" for t, d in decisions.items() if not d["passed"])
        )
        files: dict[str, tuple[int, Path]] = {}
        for task, coeffs in merged.coefficients.items():
            path = save_task_version(
                adapters_dir / "tasks",
                task=task,
                version=versions[task],
                coeffs_by_layer=coeffs,
                basis_id=basis_id,
                base_model_id=model_id,
            )
            files[task] = (versions[task], path)
            decisions[task] = {
                **decisions[task],
                "passed": passed,
                "reason": reason,
                "merge": True,
                "reconstruction_error": errors.get(task),
            }
        ctx.summary["eval_pass_baseline"] = pass_rate(baseline, list(baseline))
        ctx.summary["gate_pass_baseline"] = pass_rate(dict(served_gate), list(served_gate))
        gate_outcomes(ctx, served_gate)[MERGE_CANDIDATE] = dict(gate_results)
        ctx.summary["merge"] = {"basis_id": basis_id, "reconstruction_errors": errors, "passed": passed}
        promoted = self._record(ctx, merged.coefficients, decisions, files, basis_id, model_id)
        if strategy.max_attempts == 1:
            # promoted, the merge is every task in the new basis (merged.coefficients holds every served task)
            self._served_after(
                ctx,
                fingerprint,
                dict(versions) if passed else {},
                basis_id,
                served_outcomes_after(
                    served_gate, {MERGE_CANDIDATE: gate_results}, [MERGE_CANDIDATE] if passed else []
                ),
                replaces_all=passed,
            )
        if self.live is not None:
            self.live.sync()
        ctx.summary.update(
            {
                "basis_id": basis_id,
                "candidates": {t: f"{t}@v{v}" for t, v in versions.items()},
                "promoted": promoted,
                "gate": decisions,
                "night_seconds": round(time.monotonic() - started, 1),
            }
        )
        return ctx.summary

    def _record(
        self,
        ctx: RunContext,
        candidates: Mapping[str, Mapping[str, TaskCoefficients]],
        decisions: Mapping[str, dict[str, Any]],
        files: Mapping[str, tuple[int, Path]],
        basis_id: str,
        model_id: str,
    ) -> list[str]:
        """All versions and the promotions in ONE transaction: a crash before it changes nothing served."""
        promoted: list[str] = []
        with self.db.session() as s:
            repo = AdapterRepository(s)
            metrics = MetricRepository(s)
            for task, coeffs in candidates.items():
                version, path = files[task]
                decision = decisions[task]
                row = repo.add(
                    task=task,
                    version=version,
                    status="candidate",
                    path=str(path),
                    basis_id=basis_id,
                    base_model_id=model_id,
                    run_id=ctx.run_id,
                    gate=decision,
                    reason=decision["reason"],
                    params=_params(coeffs),
                    bytes=4 * _params(coeffs),
                )
                if decision["passed"]:
                    repo.promote(row)
                    promoted.append(f"{task}@v{version}")
                else:
                    row.status = "rejected"
                if decision["task_pass_after"] is not None:
                    metrics.record("gate_task_pass", decision["task_pass_after"], {"task": task}, ctx.run_id)
            state = RouteStateRepository(s)
            if promoted and state.get().basis_id != basis_id:
                state.bump(basis_id=basis_id)
            if "eval_pass_baseline" in ctx.summary and ctx.summary["eval_pass_baseline"] is not None:
                metrics.record("eval_pass_baseline", ctx.summary["eval_pass_baseline"], {}, ctx.run_id)
            RunRepository(s).append_log(ctx.run_id, f"promoted: {promoted or 'nothing'}")
        return promoted

    @staticmethod
    def _k_summary(bases: Mapping[str, Any]) -> str:
        ks = sorted({(b.k_beta, b.k_alpha) for b in bases.values()})
        return ", ".join(f"{kb}/{ka}" for kb, ka in ks)
