"""Service settings: every knob is an environment variable ``DREAMFIX_<NAME>`` (nested: ``DREAMFIX_SANDBOX__WALL_SECONDS``).

The defaults are the embedded ones the README promises: SQLite in a data dir, the default model, a jailed
sandbox. ``service`` is the only composition root, so the per-package configs (sandbox, agent, ...) are built
from here and handed down as plain dataclasses.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from router.tasks import TaskRouter, task_groups


def _default_data_dir() -> Path:
    return Path.home() / ".dreamfix"


class SandboxSettings(BaseModel):
    jail: Literal["bwrap", "none"] = "bwrap"
    # Running untrusted code without a jail must be an explicit, loud decision.
    allow_unjailed: bool = False
    max_concurrency: int = 2
    cpu_seconds: int = 20
    wall_seconds: float = 30.0
    memory_mb: int = 2048
    max_processes: int = 64
    max_file_bytes: int = 64 * 1024 * 1024
    max_output_bytes: int = 256 * 1024
    max_source_bytes: int = 256 * 1024
    cache_entries: int = 4096


class AgentSettings(BaseModel):
    max_attempts: int = 4
    suggestions_first: bool = True
    hints: bool = True
    max_new_tokens: int = 768
    #: Best-of-n search (agent.loop.Strategy.best_of): from model round ``sample_from`` on, n sampled
    #: candidates per problem in one batched call, all verified. 1 = one reply per round (greedy first).
    best_of: int = Field(default=1, ge=1, le=64)
    #: Greedy replies decode with prompt lookup (drafts copied from the prompt, verified in one pass: the
    #: greedy text, in fewer passes) and reuse the prefix KV cache of the loop's earlier prompts.
    prompt_lookup: bool = True
    sample_from: int = Field(default=1, ge=0)


class LimitSettings(BaseModel):
    max_body_bytes: int = 1024 * 1024
    max_code_bytes: int = 256 * 1024
    queue_size: int = 16
    workers: int = 1
    #: Copies of the model, each serving one fix at a time (the fix queue gets at least this many workers).
    #: 1 on a 2-core CPU host: one forward already uses both cores, so a second copy only adds its weights'
    #: memory (float32 0.5B: ~2 GB; int8: ~0.5 GB; docs/service.md) and splits the same cores. Raise it
    #: where cores (or a GPU) and memory allow.
    model_workers: int = Field(default=1, ge=1, le=16)
    #: A fix request's deadline when it asks for none (``FixRequest.timeout_s``): admission, the loop's
    #: generation deadline and the 504 all count from it.
    request_timeout_s: float = Field(default=300.0, gt=0)
    #: The longest deadline a fix request may ask for with ``timeout_s`` (beyond it: 422).
    max_request_timeout_s: float = Field(default=600.0, gt=0)
    #: /v1/check (and the fix fast lane) run in their own bounded lane: 429 beyond it, and a wall limit
    #: that counts the time spent waiting in it. One client address holds at most half the lane
    #: (``max(1, (check_queue_size + check_workers) // 2)`` checks queued or running); beyond that, 429.
    check_queue_size: int = 32
    check_workers: int = 2
    check_timeout_s: float = 60.0
    #: Slow clients (service/api/slowclient.py): a request's headers must be complete within
    #: ``header_timeout_s`` of the connection's start (or of the next request's first byte), its body within
    #: ``body_timeout_s`` of the headers, else 408 and the socket closes; an idle kept-alive connection
    #: closes after ``keep_alive_s`` (uvicorn's timeout_keep_alive).
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    keep_alive_s: float = Field(default=5.0, gt=0)
    #: ``dreamfix serve`` on SIGTERM/SIGINT: requests in flight get this long to finish (uvicorn's
    #: timeout_graceful_shutdown), then they are cancelled, running sandbox jails killed and their work dirs
    #: removed.
    shutdown_grace_s: float = Field(default=10.0, gt=0)


class SchedulerSettings(BaseModel):
    enabled: bool = True
    day_cron: str = "0 9-17 * * *"
    night_cron: str = "0 2 * * *"
    misfire_grace_s: int = 3600
    #: Replicas on one database elect one scheduler leader; a dead leader's lease expires after this.
    leader_ttl_s: float = Field(default=30.0, gt=0)


class ShareSettings(BaseModel):
    variance_threshold: float = 0.6
    k_cap: int = 32
    pseudo_rank: int = 1
    phi: int = 0
    lora_rank: int = 8
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    train_steps: int = 60
    learning_rate: float = 5e-3  # Phase 2 (coefficients)
    # LoRA seeds (a first night's, and Phase 1's input): 5e-3 cost the ownership group 6 of 7 dev problems
    # (0 wins); 1e-3 did not (docs/learning.md, "Seed learning rate": tests/benchmarks/recipe_sweep.py)
    seed_learning_rate: float = Field(default=1e-3, gt=0.0)
    batch_size: int = Field(default=4, ge=1)  # LoRA seeds and Phase 2 (learner.share.config.TrainConfig)
    merge_every: int = 3
    seed: int = 0


class DaySettings(BaseModel):
    koans_per_day: int = 24
    client_retries: int = 20


class NightSettings(BaseModel):
    min_examples_per_task: int = 4
    max_examples_per_task: int = 64
    generated_examples: int = 200  # drawn from agent.generators, verified, routed like everything else
    gate_max_attempts: int = 1  # 1 = one-shot gate: exact with the routed-subset shortcut (docs/service.md)
    seed_steps: int = 60
    # > 0: each task's LoRA seed trains max(seed_steps, ceil(seed_epochs · examples / share.batch_size)) steps,
    # at least that many passes over its examples (TrainConfig.seed_steps_for); 0 = seed_steps, whatever the
    # buffer (at 60 steps × batch 2 a 232-example buffer is half seen: docs/learning.md). Not yet measured on
    # the real model, so off by default.
    seed_epochs: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    max_length: int = 1024
    copy_weight: float = Field(default=1.0, ge=0.0, le=1.0)  # edit-weighted loss; 1 = plain, 0 = mask copies
    # decoder layers recompute their activations in backward (learner.share.checkpoint): same adapters, a
    # fraction of training's memory for one more forward per step (docs/learning.md, "Night memory")
    gradient_checkpointing: bool = True
    heartbeat_s: float = 30.0
    # the night's wall budget (service/night_progress.py: data and training stop in time, the gate is reported)
    wall_budget_s: float = Field(default=4 * 3600.0, gt=0.0)
    progress_every_s: float = Field(
        default=30.0, gt=0.0
    )  # progress into the run row and log at least this often
    replay_cap: int = Field(default=256, ge=0)  # replayed verified examples kept per task (0 = no replay)
    progress_every_items: int = Field(default=16, ge=1)  # ... or every this many items
    eval_limit: int | None = None  # evaluate only the first N eval koans (tests, smoke runs)
    tasks: list[str] | None = None  # train only these tasks tonight (default: every task with enough data)
    # k replies sampled per training problem the model fails greedily, verified, kept word for word
    # (service/self_data.py); 0 = reference fixes only (with a cause sentence)
    self_samples: int = Field(default=4, ge=0, le=64)
    # The paired gate (service/gate.py) on generated problems from held-out seeds (agent/pools.py).
    gate_pool: int = Field(default=200, ge=0)  # gate-pool problems drawn (verified ones are used)
    test_pool: int = Field(default=200, ge=0)  # test-pool problems (only kept apart from training here)
    gate_alpha: float = Field(default=0.05, gt=0.0, le=1.0)  # promote when the sign test's p <= alpha
    gate_min_net_gain: int = Field(default=2, ge=0)  # wins - losses on the gate pool
    gate_max_family_net_loss: int = Field(default=1, ge=0)
    # One-shot gate only: the served configuration's gate-pool outcomes are taken from the newest succeeded
    # night that recorded them for the same configuration (summary "served_gate_after", matched by
    # service.night.gate_fingerprint: model, dtype/weights, served versions and basis, the gate's decoding
    # and routing settings, the pool's problems, torch, the CPU) instead of re-running the served model on
    # the pool; False always re-runs it (docs/learning.md, "The gate statistics").
    reuse_gate_baseline: bool = True


class RouterSettings(BaseModel):
    confidence_threshold: float = 0.5
    # which adapter a routed problem uses (router.tasks.task_groups): one per error family ("fine", 18),
    # three coarse groups ("coarse": ownership, types, items) or one for all ("pooled"); the night trains,
    # gates and serves these keys (docs/learning.md, "Task groups")
    grouping: Literal["fine", "coarse", "pooled"] = "coarse"

    def task_router(self) -> TaskRouter:
        """The router the daemon routes with (serving, the day job, the night; the experiments in
        service/research keep one adapter per family)."""
        return TaskRouter(threshold=self.confidence_threshold, groups=task_groups(self.grouping))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DREAMFIX_", env_nested_delimiter="__", env_file=None, extra="ignore"
    )

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None
    # How long `dreamfix serve` waits for an unreachable database at start (retrying with backoff) before failing.
    database_wait_s: float = Field(default=30.0, ge=0.0)
    model: str = "qwen2.5-coder-0.5b-instruct"
    model_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    #: ``auto`` (default): int8 linear layers on CPU (learner/quant.py; decode 4.81× float32 at batch 1 on an
    #: AVX-512 VNNI 2-core EPYC, 1.79× at batch 1 and 7.6× at batch 8 on an AVX2-only one: docs/runtime.md),
    #: the float dtype on CUDA; ``int8`` forces int8 (CPU only), ``float`` keeps the loaded dtype. Chosen on the
    #: paired 99-koan one-shot run on the Xeon (docs/data/int8-eval/): int8 18/99 vs float32 20/99, 2 vs 4
    #: discordant, p = 0.69 (per-call activations then; per token since, the AVX2 rerun still pending).
    model_weights: Literal["auto", "float", "int8"] = "auto"
    device: str = "auto"
    threads: int | None = None
    admin_token: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    log_json: bool = False
    sandbox_cache: Path | None = None  # default: <data_dir>/sandbox-cache

    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    share: ShareSettings = Field(default_factory=ShareSettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    day: DaySettings = Field(default_factory=DaySettings)
    night: NightSettings = Field(default_factory=NightSettings)

    @model_validator(mode="after")
    def _night_tasks_are_routed(self) -> Settings:
        known = set(task_groups(self.router.grouping).values())
        unknown = sorted(set(self.night.tasks or ()) - known)
        if unknown:
            raise ValueError(
                f"night.tasks {unknown} are not tasks of router.grouping={self.router.grouping!r}: "
                f"{', '.join(sorted(known))}"
            )
        return self

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'dreamfix.db'}"

    @property
    def model_cache_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def sandbox_cache_dir(self) -> Path:
        return self.sandbox_cache or self.data_dir / "sandbox-cache"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
