"""``dreamfix experiment``: the Share claims measured on Rust repair, stage by stage, resumable.

Everything lives in one experiment folder (``<data_dir>/experiments/<name>/``): the config, the training
examples per task, the LoRA seeds (safetensors), one JSON result per stage and the figures. Each stage skips
work whose artefact already exists, so a long CPU run that is interrupted resumes where it stopped; each
stage is also recorded in the ``experiment_runs`` table (running → succeeded / failed / interrupted).

Stages (each needs the earlier ones' artefacts, and builds them when missing):

* ``seeds``       one LoRA per task (and per random seed), trained on that task's examples only.
* ``strategies``  base, hints, mean adapter, averaged coefficients, routed, oracle, one LoRA per task.
* ``heatmap``     every task's coefficients applied to every eval item, plus the routed column.
* ``sequential``  tasks arrive one per night: R matrix, ACC/BWT/FWT for Share vs naive LoRA vs per-task LoRA.
* ``subspace``    principal angles / similarity of bases from disjoint task subsets and from other seeds.
* ``sweep``       k cap, pseudo-rank p, φ: score against bytes per task.

Scores: reference-fix NLL for every cell (cheap, one forward per koan) and, where ``pass_rate`` is on,
the verified one-shot pass rate (a generation + sandbox check per koan).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from agent.sandbox import Sandbox
from learner.runtime import ModelRuntime
from learner.share.accounting import task_cost
from learner.share.analysis import plot_subspace, subspace_report
from learner.share.artifacts import load_seed, save_seed
from learner.share.bank import ShareBank
from learner.share.layer import attach_share, detach_share
from learner.share.math import LayerBasis, LoraSeed, TaskCoefficients
from learner.share.phases import Phase2Config, phase1, phase2, phase3
from learner.share.prefix import FrozenPrefix
from learner.share.seeds import SeedConfig, train_lora_seed
from router import TaskRouter
from service.experiments import plots
from service.experiments.data import EvalItem, eval_items, prompt_for, task_examples
from service.experiments.metrics import cl_metrics
from service.experiments.scoring import HINTS_ONE_SHOT, ONE_SHOT, pass_results, reference_nll
from service.experiments.variants import (
    add_in_place,
    applied,
    lora_deltas,
    mean_deltas,
    restore_weights,
    snapshot_weights,
)

#: The score of the R matrices, the heatmap and the sweeps: NLL of the reference fix's changed lines.
SCORE = "edit_nll"

STAGES = ("seeds", "strategies", "heatmap", "sequential", "subspace", "sweep")

#: Config keys that may change between runs of one experiment (they add numbers, they change none).
RUN_OPTIONS = frozenset({"pass_rate"})


@dataclass
class ExperimentConfig:
    """Everything that determines an experiment's numbers (saved with it; a resumed run must match)."""

    tasks: list[str] = field(
        default_factory=lambda: ["borrows", "moves", "mutability", "type_mismatch", "unresolved"]
    )
    per_task: int = 24  # training examples per task
    eval_per_family: int | None = None  # None = every eval koan of the families scored
    score_all_families: bool = False  # strategies/heatmap over the whole eval split, not only the tasks'
    # Also the verified one-shot pass rate (a generation per koan and config). A run option, not part of the
    # experiment's identity: turning it on later fills pass outcomes into the configurations already scored.
    pass_rate: bool = False
    layers: list[int] | None = None  # transformer layers adapted (None = all); fewer = cheaper backward
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    lora_rank: int = 8
    seed_steps: int = 24
    seed_lr: float = 2e-3
    seeds: list[int] = field(default_factory=lambda: [0])  # random seeds for the LoRA seeds (subspace: ≥ 2)
    phase2_steps: int = 24
    phase2_lr: float = 5e-3
    batch_size: int = 2
    max_length: int = 1024
    threshold: float = 0.6
    k_cap: int = 32
    pseudo_rank: int = 1
    phi: int = 2  # sequential Share: temporary directions per night, merged by Phase 3
    sweep_caps: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    sweep_ps: list[int] = field(default_factory=lambda: [1, 2, 4])
    sweep_phis: list[int] = field(default_factory=lambda: [0, 2])
    max_new_tokens: int = 512
    data_seed: int = 0
    # Run the unadapted layers below min(layers) once per sequence (learner.share.prefix); exact up to
    # float rounding, so it is part of the config a resumed run must match.
    prefix_cache: bool = True

    def __post_init__(self) -> None:
        positive = {
            "per_task": self.per_task,
            "lora_rank": self.lora_rank,
            "seed_steps": self.seed_steps,
            "phase2_steps": self.phase2_steps,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "k_cap": self.k_cap,
            "pseudo_rank": self.pseudo_rank,
            "max_new_tokens": self.max_new_tokens,
            "seed_lr": self.seed_lr,
            "phase2_lr": self.phase2_lr,
        }
        bad = [f"{k}={v}" for k, v in positive.items() if not v > 0]
        if self.eval_per_family is not None and self.eval_per_family < 1:
            bad.append(f"eval_per_family={self.eval_per_family}")
        if self.phi < 0:
            bad.append(f"phi={self.phi}")
        if bad:
            raise ValueError(f"experiment options must be positive: {', '.join(bad)}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if not self.seeds:
            raise ValueError("at least one random seed is needed (--seeds)")

    def target_names(self, model: Any) -> list[str]:
        """PEFT target names: bare module names, or ``layers.{i}.self_attn.{m}`` for chosen layers."""
        if self.layers is None:
            return list(self.target_modules)
        names = []
        for name, _ in model.named_modules():
            for m in self.target_modules:
                if any(name.endswith(f"layers.{i}.self_attn.{m}") for i in self.layers):
                    names.append(name.split("model.", 1)[-1] if name.startswith("model.") else name)
        return sorted(set(names))


class Experiment:
    """One experiment folder and the live pieces (model, sandbox, router) its stages share."""

    def __init__(
        self,
        root: Path,
        config: ExperimentConfig,
        runtime: ModelRuntime,
        sandbox: Sandbox,
        router: TaskRouter,
        *,
        koans_dir: Path | None = None,
    ) -> None:
        self.root = root
        self.config = config
        self.runtime = runtime
        self.sandbox = sandbox
        self.router = router
        self.koans_dir = koans_dir
        root.mkdir(parents=True, exist_ok=True)
        (root / "seeds").mkdir(exist_ok=True)
        (root / "figures").mkdir(exist_ok=True)
        self._check_config()
        self._examples: dict[str, list[Any]] | None = None
        self._items: list[EvalItem] | None = None
        self._prefix: FrozenPrefix | None = None
        self.progress: Callable[[str], None] = lambda msg: print(msg, flush=True)

    # ------------------------------------------------------------------------------------------ plumbing
    def _check_config(self) -> None:
        path = self.root / "config.json"
        current = asdict(self.config)
        if path.exists():
            saved = json.loads(path.read_text())
            changed = sorted(k for k in current if k not in RUN_OPTIONS and saved.get(k) != current[k])
            if changed:
                raise ValueError(
                    f"experiment {self.root.name!r} was started with another config ({', '.join(changed)} "
                    "differ): use a new --name, or the same options to resume"
                )
            if current["pass_rate"] and not saved.get("pass_rate"):
                _atomic_write(path, {**saved, "pass_rate": True})  # pass outcomes are being added
        else:
            _atomic_write(path, current)

    def result_path(self, stage: str) -> Path:
        return self.root / f"{stage}.json"

    def load_result(self, stage: str) -> dict[str, Any]:
        path = self.result_path(stage)
        return json.loads(path.read_text()) if path.exists() else {}

    def save_result(self, stage: str, result: dict[str, Any]) -> None:
        _atomic_write(self.result_path(stage), result)

    @property
    def model(self) -> Any:
        return self.runtime.model

    @property
    def prefix(self) -> FrozenPrefix | None:
        """The frozen-prefix cache shared by every training and scoring pass, when only top layers adapt."""
        if not self.config.prefix_cache or not self.config.layers or min(self.config.layers) == 0:
            return None
        if self._prefix is None:
            self._prefix = FrozenPrefix(self.model, min(self.config.layers))
        return self._prefix

    def examples(self) -> dict[str, list[Any]]:
        """Training examples per task, built once (sandbox-verified) and cached in the folder."""
        if self._examples is None:
            path = self.root / "examples.json"
            if path.exists():
                self._examples = {t: [tuple(e) for e in v] for t, v in json.loads(path.read_text()).items()}
            else:
                self.progress("building training examples (generator draws + train koans, sandbox-verified)")
                self._examples = task_examples(
                    self.sandbox,
                    self.config.tasks,
                    per_task=self.config.per_task,
                    seed=self.config.data_seed,
                    koans_dir=self.koans_dir,
                )
                _atomic_write(path, self._examples)
            empty = [t for t, v in self._examples.items() if not v]
            if empty:
                raise ValueError(f"no training examples for task(s) {empty}")
        return self._examples

    def items(self, all_families: bool = False) -> list[EvalItem]:
        """Eval items of the tasks' families (or of every family), from the frozen eval split."""
        if self._items is None:
            self._items = eval_items(
                self.sandbox, self.router, per_family=self.config.eval_per_family, koans_dir=self.koans_dir
            )
        if all_families:
            return self._items
        return [i for i in self._items if i.family in self.config.tasks]

    # --------------------------------------------------------------------------------------------- seeds
    def seed_path(self, task: str, seed: int) -> Path:
        return self.root / "seeds" / f"{task}-s{seed}.safetensors"

    def seed(self, task: str, seed: int = 0) -> LoraSeed:
        """The task's LoRA (trained on the plain model now if it is not in the folder yet)."""
        path = self.seed_path(task, seed)
        if not path.exists():
            # Stages may run in parallel processes: one trains a missing seed, the others wait for it.
            with _locked(self.root / f".seed-{task}-s{seed}.lock"):
                if not path.exists():
                    self._train_seed(path, task, seed)
        return load_seed(path)

    def _train_seed(self, path: Path, task: str, seed: int) -> None:
        with self.plain_model():
            started = time.monotonic()
            result = train_lora_seed(
                self.model,
                self.runtime.tokenizer,
                self.examples()[task],
                f"{task}-s{seed}",
                self._seed_config(seed),
                base_model_id=self.runtime.model_id,
                prefix=self.prefix,
            )
            save_seed(path, result.seed)
            self._log_training(path.stem, result.losses, time.monotonic() - started)

    def _seed_config(self, seed: int) -> SeedConfig:
        c = self.config
        return SeedConfig(
            rank=c.lora_rank,
            alpha=2 * c.lora_rank,
            target_modules=self.config.target_names(self.model),
            steps=c.seed_steps,
            learning_rate=c.seed_lr,
            batch_size=c.batch_size,
            max_length=c.max_length,
            seed=seed,
            progress=False,
        )

    def _phase2_config(self, pseudo_rank: int | None = None, phi: int = 0) -> Phase2Config:
        c = self.config
        return Phase2Config(
            pseudo_rank=pseudo_rank or c.pseudo_rank,
            phi=phi,
            steps=c.phase2_steps,
            learning_rate=c.phase2_lr,
            batch_size=c.batch_size,
            max_length=c.max_length,
            seed=c.data_seed,
            progress=False,
        )

    def _log_training(self, name: str, losses: list[float], seconds: float) -> None:
        path = self.root / "training.json"
        # Stages of one experiment may run in parallel processes: read-modify-write under a lock.
        with _locked(self.root / ".training.lock"):
            data = json.loads(path.read_text()) if path.exists() else {}
            data[name] = {"losses": losses, "seconds": round(seconds, 1)}
            _atomic_write(path, data)
        self.progress(f"trained {name}: loss {losses[0]:.3f} → {losses[-1]:.3f} in {seconds:.0f} s")

    @contextmanager
    def plain_model(self) -> Iterator[None]:
        """No ShareLinear layers inside (LoRA training and weight deltas want the plain modules)."""
        detach_share(self.model)
        yield

    @contextmanager
    def share(self, bases: Mapping[str, LayerBasis]) -> Iterator[ShareBank]:
        """The model with ShareLinear layers for ``bases`` and an empty bank; plain again afterwards."""
        detach_share(self.model)
        bank = attach_share(self.model, bases, base_model_id=self.runtime.model_id)
        try:
            yield bank
        finally:
            detach_share(self.model)

    # ------------------------------------------------------------------------------------------- scoring
    def score(
        self,
        items: Sequence[EvalItem],
        rows: Sequence[int] | None = None,
        snapshot: Any = None,
        *,
        hints: bool = False,
        with_pass: bool | None = None,
        have: Mapping[str, Mapping[str, Any]] | None = None,
        label: str = "",
    ) -> dict[str, dict[str, Any]]:
        """item id → {"nll", "edit_nll", and "fixed" when pass rates are on} for one model configuration.

        ``have``: this configuration's scores from an earlier run; only what they lack is computed (the
        NLLs of items not in them, the pass outcomes of items without one)."""
        have = have or {}
        out: dict[str, dict[str, Any]] = {i.id: dict(have[i.id]) for i in items if i.id in have}
        todo = [(n, i) for n, i in enumerate(items) if i.id not in out]
        if todo:
            subset = [replace_messages(i, prompt_for(i, True)) if hints else i for _, i in todo]
            sub_rows = [rows[n] for n, _ in todo] if rows is not None else None
            nll = reference_nll(self.runtime, subset, sub_rows, snapshot, prefix=self.prefix)
            out.update({i.id: dict(v) for (_, i), v in zip(todo, nll, strict=True)})
        if self.pass_on(with_pass):
            todo = [(n, i) for n, i in enumerate(items) if "fixed" not in out[i.id]]
            if todo:
                started = time.monotonic()
                outcomes = pass_results(
                    self.runtime,
                    self.sandbox,
                    [i for _, i in todo],
                    [rows[n] for n, _ in todo] if rows is not None else None,
                    snapshot,
                    strategy=HINTS_ONE_SHOT if hints else ONE_SHOT,
                    max_new_tokens=self.config.max_new_tokens,
                )
                for item_id, outcome in outcomes.items():
                    out[item_id].update(outcome)
                fixed = sum(bool(o["fixed"]) for o in outcomes.values())
                self.progress(
                    f"{label or 'score'}: {fixed}/{len(outcomes)} fixed "
                    f"({time.monotonic() - started:.0f} s of generation and checks)"
                )
        return out

    def pass_on(self, with_pass: bool | None = None) -> bool:
        return self.config.pass_rate if with_pass is None else with_pass

    def complete(self, scores: Mapping[str, Mapping[str, Any]] | None, items: Sequence[EvalItem]) -> bool:
        """Whether a configuration's saved scores cover ``items`` (with pass outcomes when those are on)."""
        if scores is None or any(i.id not in scores for i in items):
            return False
        return not self.pass_on() or all("fixed" in scores[i.id] for i in items)

    def borrowed(
        self, strategy: str, items: Sequence[EvalItem], have: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """``have`` completed with the strategies stage's cells of ``strategy`` for ``items``: the same
        configuration (same seeds, same Phase 1 coefficients) on the same koans, already scored, so a later
        stage does not generate them again."""
        cells = self.load_result("strategies").get("scores", {}).get(strategy, {})
        out = dict(have or {})
        for i in items:
            if i.id not in out and i.id in cells:
                out[i.id] = cells[i.id]
        return out

    def task_rows(self, items: Sequence[EvalItem], bank: ShareBank, by: str) -> list[int]:
        """Bank row per item: its routed task (``routed``) or its true family (``oracle``); -1 = base."""
        installed = bank.tasks()
        rows = []
        for item in items:
            task = item.routed_task if by == "routed" else item.family
            rows.append(bank.index(task) if task in installed else -1)
        return rows

    # ======================================================================================== stages
    def run_seeds(self) -> dict[str, Any]:
        result: dict[str, Any] = {"seeds": {}}
        for seed in self.config.seeds:
            for task in self.config.tasks:
                lora = self.seed(task, seed)
                result["seeds"][lora.name] = {"layers": len(lora.layers), "rank": lora.rank}
        training = json.loads((self.root / "training.json").read_text())
        result["training"] = training
        result["examples"] = {t: len(v) for t, v in self.examples().items()}
        return result

    def phase1_bases(self, tasks: Sequence[str] | None = None, *, seed: int = 0, **kw: Any) -> Any:
        names = list(tasks or self.config.tasks)
        loras = [self.seed(t, seed) for t in names]
        return phase1(
            [_renamed(lora, t) for lora, t in zip(loras, names, strict=True)],
            threshold=kw.get("threshold", self.config.threshold),
            cap=kw.get("cap", self.config.k_cap),
            include_mean=kw.get("include_mean", False),
        )

    def run_strategies(self) -> dict[str, Any]:
        """Pass rate / reference NLL per family for every strategy, and regressions against the base."""
        items = self.items(self.config.score_all_families)
        done = self.load_result("strategies").get("scores", {})
        tasks = self.config.tasks
        loras = {t: self.seed(t) for t in tasks}
        p1 = self.phase1_bases()

        def save(name: str, scores: dict[str, Any]) -> None:
            done[name] = scores
            self.save_result("strategies", {"scores": done})
            self.progress(f"strategies: {name} scored on {len(scores)} koans")

        def todo(name: str) -> bool:
            return not self.complete(done.get(name), items)

        if todo("base"):
            save("base", self.score(items, have=done.get("base"), label="base"))
        if todo("hints"):
            save("hints", self.score(items, hints=True, have=done.get("hints"), label="hints"))
        if todo("mean adapter"):
            with self.plain_model(), applied(self.model, mean_deltas(list(loras.values()))):
                save("mean adapter", self.score(items, have=done.get("mean adapter"), label="mean adapter"))
        if todo("per-task LoRA"):
            merged: dict[str, dict[str, Any]] = dict(done.get("per-task LoRA", {}))
            with self.plain_model():
                base_items = [i for i in items if i.family not in loras]
                if base_items:
                    merged.update({k: v for k, v in done["base"].items() if k in {i.id for i in base_items}})
                for task, lora in loras.items():
                    own = [i for i in items if i.family == task]
                    if own and not self.complete(merged, own):
                        with applied(self.model, lora_deltas(lora)):
                            merged.update(self.score(own, have=merged, label=f"per-task LoRA {task}"))
            save("per-task LoRA", merged)
        with self.share(p1.bases) as bank:
            for task in tasks:
                bank.set_task(task, p1.coefficients[task], 1)
            averaged = _average_coefficients([p1.coefficients[t] for t in tasks])
            if todo("averaged coefficients"):
                bank.set_task("__averaged__", averaged, 1)
                rows = [bank.index("__averaged__")] * len(items)
                have = done.get("averaged coefficients")
                save(
                    "averaged coefficients",
                    self.score(items, rows, bank.snapshot(), have=have, label="averaged"),
                )
                bank.remove_task("__averaged__")
            for by in ("routed", "oracle"):
                if todo(by):
                    rows = self.task_rows(items, bank, by)
                    save(by, self.score(items, rows, bank.snapshot(), have=done.get(by), label=by))
        result = {"scores": done, "summary": summarise_scores(done, items, tasks)}
        costs = task_cost(p1.bases, pseudo_rank=self.config.pseudo_rank, lora_rank=self.config.lora_rank)
        result["bytes_per_task"] = {"share": costs.share_bytes, "lora": costs.lora_bytes}
        self._strategy_figures(result, items)
        return result

    def run_heatmap(self) -> dict[str, Any]:
        """Cell (task t's coefficients, family f) = mean NLL change vs base on f's eval koans (and the pass
        rate change, when pass rates are on)."""
        items = self.items(self.config.score_all_families)
        saved = self.load_result("heatmap")
        columns: dict[str, dict[str, Any]] = saved.get("columns", {})
        p1 = self.phase1_bases()
        base = self.load_result("strategies").get("scores", {}).get("base")
        if not self.complete(base, items):
            base = self.score(items, have=base, label="heatmap base")
        assert base is not None
        with self.share(p1.bases) as bank:
            for task in self.config.tasks:
                bank.set_task(task, p1.coefficients[task], 1)
            for task in [*self.config.tasks, "routed"]:
                if self.complete(columns.get(task), items):
                    continue
                rows = (
                    self.task_rows(items, bank, "routed")
                    if task == "routed"
                    else [bank.index(task)] * len(items)
                )
                # The routed column is the routed strategy; task t's row on its own family is the oracle.
                have = (
                    self.borrowed("routed", items, columns.get(task))
                    if task == "routed"
                    else self.borrowed("oracle", [i for i in items if i.family == task], columns.get(task))
                )
                columns[task] = self.score(items, rows, bank.snapshot(), have=have, label=f"heatmap {task}")
                self.save_result("heatmap", {"columns": columns})
                self.progress(f"heatmap: column {task} done")
            applied_check = coefficients_change_outputs(self, items[0], bank)
        families = sorted({i.family for i in items})
        configs = [*self.config.tasks, "routed"]

        def delta(metric: str) -> list[list[float]]:
            return [
                [
                    _mean(
                        [
                            float(columns[t][i.id][metric]) - float(base[i.id][metric])
                            for i in items
                            if i.family == f
                        ]
                    )
                    for f in families
                ]
                for t in configs
            ]

        matrix = delta(SCORE)
        plots.heatmap(
            matrix,
            configs,
            families,
            self.root / "figures" / "heatmap.png",
            "Edit NLL change vs base\n(rows: coefficients applied; columns: eval family)",
            "Δ edit NLL (nats/token, < 0 = better)",
        )
        result: dict[str, Any] = {
            "columns": columns,
            "families": families,
            "matrix": matrix,
            "applied_check": applied_check,
        }
        if all("fixed" in v for c in [base, *columns.values()] for v in c.values()):
            pass_matrix = delta("fixed")
            result["pass_matrix"] = pass_matrix
            result["base_pass_by_family"] = {
                f: _mean([float(base[i.id]["fixed"]) for i in items if i.family == f]) for f in families
            }
            plots.heatmap(
                pass_matrix,
                configs,
                families,
                self.root / "figures" / "heatmap_pass.png",
                "One-shot pass rate change vs base\n(rows: coefficients applied; columns: eval family)",
                "Δ pass rate (> 0 = better)",
            )
        return result

    def run_sequential(self) -> dict[str, Any]:
        """Tasks arrive one per night. Three learners; after every night all tasks are scored. With pass
        rates on, the state each learner serves after the last night is also scored by verified one-shot
        fixes (``final``): a learner whose R matrix is complete replays its nights to get there (the merged
        weights are not saved)."""
        tasks = self.config.tasks
        items = self.items()
        by_task = {t: [i for i in items if i.family == t] for t in tasks}
        state = self.load_result("sequential")
        R: dict[str, list[list[float]]] = state.get("R", {})
        final: dict[str, dict[str, Any]] = state.setdefault("final", {})
        base_scores = state.get("base")
        if base_scores is None:
            base_scores = self._task_scores(self.score(items, with_pass=False), by_task)
            state["base"] = base_scores
        examples = self.examples()

        def save() -> None:
            state["R"] = R
            self.save_result("sequential", state)

        def todo(method: str) -> bool:
            """The method's R matrix is incomplete, or its last night's pass outcomes are missing."""
            return len(R.get(method, [])) < len(tasks) or (
                self.pass_on() and not self.complete(final.get(method), items)
            )

        if self.pass_on() and not self.complete(final.get("base"), items):
            have = self.borrowed("base", items, final.get("base"))
            final["base"] = self.score(items, have=have, label="sequential base")
            save()
        # One LoRA per task: task j is served by its own LoRA once learned, by the base model before.
        if todo("per-task LoRA"):
            own: dict[str, float] = {}
            last: dict[str, Any] = {}
            with self.plain_model():
                for t in tasks:
                    have = self.borrowed("per-task LoRA", by_task[t], final.get("per-task LoRA"))
                    with applied(self.model, lora_deltas(self.seed(t))):
                        scores = self.score(by_task[t], have=have, label=f"sequential per-task LoRA {t}")
                    own[t] = self._task_scores(scores, {t: by_task[t]})[t]
                    last.update(scores)
            if self.pass_on():
                final["per-task LoRA"] = last
            R["per-task LoRA"] = [
                [own[t] if j <= i else base_scores[t] for j, t in enumerate(tasks)] for i in range(len(tasks))
            ]
            save()
        # Naive sequential fine-tuning: one LoRA per night trained on the current weights, merged in.
        naive = R.setdefault("naive LoRA", [])
        if todo("naive LoRA"):
            with self.plain_model():
                originals = snapshot_weights(self.model, _layer_keys(self.seed(tasks[0])))
                try:
                    naive.clear()  # the merged weights are not saved: a resumed run replays every night
                    for night, task in enumerate(tasks):
                        if night == 0:  # on the untouched model night 1 IS the task's seed LoRA (same config)
                            lora = self.seed(task)
                        else:
                            started = time.monotonic()
                            trained = train_lora_seed(
                                self.model,
                                self.runtime.tokenizer,
                                examples[task],
                                f"naive-{night}-{task}",
                                self._seed_config(self.config.seeds[0]),
                                base_model_id=self.runtime.model_id,
                                prefix=self.prefix,
                            )
                            lora = trained.seed
                            self._log_training(
                                f"naive-{night}-{task}", trained.losses, time.monotonic() - started
                            )
                        add_in_place(self.model, lora_deltas(lora))
                        is_last = night == len(tasks) - 1
                        scores = self.score(items, with_pass=is_last and self.pass_on(), label="naive LoRA")
                        naive.append(self._row(scores, by_task))
                        if is_last and self.pass_on():
                            final["naive LoRA"] = scores
                        save()
                        self.progress(f"sequential: naive LoRA after night {night + 1}: {naive[-1]}")
                finally:
                    restore_weights(self.model, originals)
        # Share: night 1 builds the basis from the first task's LoRA (whole span), later nights learn
        # coefficients with φ temporary directions (Phase 2) and merge them into the basis (Phase 3).
        share_rows = R.setdefault("Share", [])
        if todo("Share"):
            share_rows.clear()
            merges: list[dict[str, Any]] = []
            first = phase1([_renamed(self.seed(tasks[0]), tasks[0])], threshold=1.0, cap=self.config.k_cap)
            bases: dict[str, LayerBasis] = first.bases
            coeffs: dict[str, dict[str, TaskCoefficients]] = {tasks[0]: first.coefficients[tasks[0]]}
            for night, task in enumerate(tasks):
                with self.share(bases) as bank:
                    if night > 0:
                        started = time.monotonic()
                        learned = phase2(
                            self.model,
                            self.runtime.tokenizer,
                            bank,
                            examples[task],
                            self._phase2_config(phi=self._phi_for(bases)),
                            task=task,
                            prefix=self.prefix,
                        )
                        self._log_training(
                            f"share-{night}-{task}", learned.losses, time.monotonic() - started
                        )
                        merged = phase3(bases, coeffs, {task: learned}, threshold=1.0, cap=self.config.k_cap)
                        merges.append(
                            {
                                "night": night + 1,
                                "errors": merged.report.errors,
                                "k_after": _mean([k[0] + k[1] for k in merged.report.k_after.values()]),
                            }
                        )
                        bases, coeffs = merged.bases, {t: dict(c) for t, c in merged.coefficients.items()}
                if night > 0:
                    detach_share(self.model)
                with self.share(bases) as bank:
                    for t, c in coeffs.items():
                        bank.set_task(t, c, night + 1)
                    rows = self.task_rows(items, bank, "oracle")
                    is_last = night == len(tasks) - 1
                    with_pass = is_last and self.pass_on()
                    scores = self.score(items, rows, bank.snapshot(), with_pass=with_pass, label="Share")
                    share_rows.append(self._row(scores, by_task))
                    if with_pass:
                        final["Share"] = scores
                state["share_merges"] = merges
                save()
                self.progress(f"sequential: Share after night {night + 1}: {share_rows[-1]}")
        base_row = [base_scores[t] for t in tasks]
        state["metrics"] = {name: cl_metrics(matrix, base_row) for name, matrix in R.items()}
        if final and all(self.complete(final.get(m), items) for m in ("base", *R)):
            state["final_summary"] = summarise_scores({m: final[m] for m in ("base", *R)}, items, tasks)
        state["tasks"] = tasks
        state["score"] = (
            "minus the mean NLL per token of the reference fix's changed lines (higher is better)"
        )
        save()
        plots.learning_curves(
            R, tasks, self.root / "figures" / "sequential.png", "Score of each task after each night"
        )
        return state

    def _phi_for(self, bases: Mapping[str, LayerBasis]) -> int:
        limit = min(min(b.k_beta, b.k_alpha) for b in bases.values()) // 4
        return min(self.config.phi, limit)

    def _task_scores(
        self, scores: Mapping[str, Mapping[str, Any]], by_task: Mapping[str, Sequence[EvalItem]]
    ) -> dict[str, float]:
        return {t: -_mean([scores[i.id][SCORE] for i in its]) for t, its in by_task.items()}

    def _row(
        self, scores: Mapping[str, Mapping[str, Any]], by_task: Mapping[str, Sequence[EvalItem]]
    ) -> list[float]:
        task_scores = self._task_scores(scores, by_task)
        return [round(task_scores[t], 5) for t in self.config.tasks]

    def run_subspace(self) -> dict[str, Any]:
        """Bases from disjoint task subsets, and (with ≥ 2 seeds) from different random seeds."""
        tasks = self.config.tasks
        half = len(tasks) // 2
        groups: dict[str, list[LoraSeed]] = {
            f"tasks {'+'.join(tasks[:half])}": [self.seed(t) for t in tasks[:half]],
            f"tasks {'+'.join(tasks[half:])}": [self.seed(t) for t in tasks[half:]],
        }
        report: dict[str, Any] = {
            "disjoint_tasks": subspace_report(groups, threshold=self.config.threshold, cap=self.config.k_cap)
        }
        if len(self.config.seeds) >= 2:
            s0, s1 = self.config.seeds[:2]
            seed_groups = {
                f"seed {s0}": [self.seed(t, s0) for t in tasks],
                f"seed {s1}": [self.seed(t, s1) for t in tasks],
            }
            report["other_seeds"] = subspace_report(
                seed_groups, threshold=self.config.threshold, cap=self.config.k_cap
            )
            plot_subspace(report["other_seeds"], self.root / "figures" / "subspace_seeds.png")
        plot_subspace(report["disjoint_tasks"], self.root / "figures" / "subspace_tasks.png")
        return report

    def run_sweep(self) -> dict[str, Any]:
        """Learn the last task in bases from the others (Phase 2), varying one knob at a time."""
        tasks = self.config.tasks
        held, others = tasks[-1], tasks[:-1]
        items = [i for i in self.items() if i.family == held]
        state = self.load_result("sweep")
        points: dict[str, dict[str, Any]] = state.get("points", {})
        c = self.config
        # φ is capped at k/4 of the smallest layer basis, and the threshold basis is often only ~4 wide:
        # the φ knob is compared on the full span of the other tasks' seeds (threshold 1.0, up to the
        # cap), φ = 0 included, so that every φ asked for can run.
        configs = (
            [("cap", cap, c.pseudo_rank, 0, c.threshold) for cap in c.sweep_caps]
            + [("p", c.k_cap, p, 0, c.threshold) for p in c.sweep_ps if p != c.pseudo_rank]
            + [("phi", c.k_cap, c.pseudo_rank, phi, 1.0) for phi in sorted({0, *c.sweep_phis})]
        )

        def done(label: str) -> bool:
            point = points.get(label)
            return point is not None and (not self.pass_on() or "pass_rate" in point)

        def save(label: str, point: dict[str, Any]) -> None:
            points[label] = point
            state["points"] = points
            self.save_result("sweep", state)
            self.progress(f"sweep: {label}: {_brief(point)}")

        if not done("base"):
            scores = self.score(items, label="sweep base")
            save("base", _sweep_point(points.get("base"), scores, bytes=0))
        if not done("LoRA"):
            with self.plain_model(), applied(self.model, lora_deltas(self.seed(held))):
                scores = self.score(items, label="sweep LoRA")
            save("LoRA", _sweep_point(points.get("LoRA"), scores, bytes=_lora_bytes(self.seed(held))))
        # A cap above every layer's threshold-chosen k does not bind: Phase 1 gives the same basis, and Phase 2
        # (seeded) the same coefficients, so such a point is a copy of the one already trained.
        trained: dict[tuple[Any, ...], str] = {}
        for knob, cap, p, phi, threshold in configs:
            label = f"{knob}: cap={cap} p={p} phi={phi}" + (" full span" if threshold == 1.0 else "")
            p1 = self.phase1_bases(others, cap=cap, threshold=threshold)  # an SVD: cheap next to Phase 2
            bases = p1.bases
            signature = (threshold, p, phi, tuple(sorted((n, b.k_beta, b.k_alpha) for n, b in bases.items())))
            twin = trained.get(signature)
            if done(label):
                trained.setdefault(signature, label)
                continue
            if twin is not None:
                copy = {k: v for k, v in points[twin].items() if k != "earlier_run"}
                save(label, {**copy, **_earlier(points.get(label)), "same_basis_as": twin})
                continue
            trained[signature] = label
            with self.share(bases) as bank:
                learned = phase2(
                    self.model,
                    self.runtime.tokenizer,
                    bank,
                    self.examples()[held],
                    self._phase2_config(pseudo_rank=p, phi=min(phi, self._phi_for(bases)) if phi else 0),
                    task=held,
                    prefix=self.prefix,
                )
            merge_error = None
            if learned.phi:
                # Merge with the other tasks' coefficients so the basis stays the shared one (a merge of
                # the held-out task alone would fit a basis to it and undercount its bytes).
                merged = phase3(bases, p1.coefficients, {held: learned}, threshold=1.0, cap=cap + learned.phi)
                bases, coeffs = merged.bases, merged.coefficients[held]
                merge_error = merged.report.worst()
            else:
                coeffs = learned.coeffs
            with self.share(bases) as bank:
                bank.set_task(held, coeffs, 1)
                scores = self.score(items, [bank.index(held)] * len(items), bank.snapshot(), label=label)
            cost = task_cost(bases, pseudo_rank=p, lora_rank=c.lora_rank)
            point = _sweep_point(
                points.get(label),
                scores,
                bytes=cost.share_bytes,
                k=_mean([b.k_beta + b.k_alpha for b in bases.values()]) / 2,
                final_loss=learned.losses[-1],
                # φ is capped at k/4 of the smallest layer basis: the label asks, this is what ran.
                phi_used=learned.phi,
                merge_worst_error=merge_error,  # Phase 3 reconstruction error, worst task (φ > 0)
            )
            save(label, point)
        state.update(
            {"points": points, "held_out_task": held, "koans": len(items), "score": "minus edit NLL"}
        )
        sweep_figures(self.root / "figures", state)
        return state

    def _strategy_figures(self, result: dict[str, Any], items: Sequence[EvalItem]) -> None:
        summary = result["summary"]
        families = sorted({i.family for i in items})
        groups = {f: {s: -summary[s]["edit_nll_by_family"][f] for s in summary} for f in families}
        plots.bars(
            groups,
            self.root / "figures" / "strategies_nll.png",
            "− NLL of the reference fix's changed lines, by family",
            "− edit NLL (nats/token)",
        )
        if all("pass_by_family" in e for e in summary.values()):
            plots.bars(
                {f: {s: summary[s]["pass_by_family"][f] for s in summary} for f in families},
                self.root / "figures" / "strategies_pass.png",
                "One-shot pass rate (compiles and passes the koan's tests), by family",
                "pass rate",
            )

    # ------------------------------------------------------------------------------------------- driver
    def run(self, stage: str) -> dict[str, Any]:
        runners: dict[str, Callable[[], dict[str, Any]]] = {
            "seeds": self.run_seeds,
            "strategies": self.run_strategies,
            "heatmap": self.run_heatmap,
            "sequential": self.run_sequential,
            "subspace": self.run_subspace,
            "sweep": self.run_sweep,
        }
        started = time.monotonic()
        if self.prefix is not None:
            self.prefix.check()
        result = runners[stage]()
        result["wall_seconds_this_run"] = round(time.monotonic() - started, 1)
        if self.prefix is not None:
            self.prefix.check()
            result["prefix_cache"] = self.prefix.stats()
        self.save_result(stage, result)
        return result


# ============================================================================================== helpers
def sweep_figures(folder: Path, state: Mapping[str, Any]) -> None:
    """``sweep.png`` (−edit NLL vs bytes per task) and, when every point has one, ``sweep_pass.png``."""
    points, held = state["points"], state["held_out_task"]
    plots.tradeoff(
        [{"label": k, "bytes": max(v["bytes"], 1), "score": v["score"]} for k, v in points.items()],
        folder / "sweep.png",
        f"{held}: score vs bytes per task",
        "bytes per task (log)",
        "− edit NLL",
    )
    if all("pass_rate" in v for v in points.values()):
        koans = f" ({state['koans']} koans)" if "koans" in state else ""
        plots.tradeoff(
            [{"label": k, "bytes": max(v["bytes"], 1), "score": v["pass_rate"]} for k, v in points.items()],
            folder / "sweep_pass.png",
            f"{held}: one-shot pass rate vs bytes per task{koans}",
            "bytes per task (log)",
            "pass rate",
            ylim=(-0.05, 1.05),
        )


def replace_messages(item: EvalItem, messages: list[dict[str, str]]) -> EvalItem:
    from dataclasses import replace

    return replace(item, messages=messages)


def coefficients_change_outputs(exp: Experiment, item: EvalItem, bank: ShareBank) -> dict[str, Any]:
    """Evidence that the heatmap really applies the coefficients: next-token logits of one eval prompt
    with each task's row differ from the base row's (the prototype's heatmap never applied them)."""
    tokenizer, model = exp.runtime.tokenizer, exp.runtime.model
    text = exp.runtime.render(item.messages)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]], device=exp.runtime.device)
    from learner.routing import routed

    out: dict[str, Any] = {}
    with torch.inference_mode():
        base = model(input_ids=ids, logits_to_keep=1).logits.float()
        for task in bank.tasks():
            row = torch.tensor([bank.index(task)], device=exp.runtime.device)
            with routed(row, bank.snapshot()):
                logits = model(input_ids=ids, logits_to_keep=1).logits.float()
            out[task] = round(float((logits - base).abs().max()), 6)
    return {"koan": item.id, "max_abs_logit_change": out}


def summarise_scores(
    scores: Mapping[str, Mapping[str, Mapping[str, Any]]], items: Sequence[EvalItem], tasks: Sequence[str]
) -> dict[str, Any]:
    families = sorted({i.family for i in items})
    base = scores.get("base", {})
    out: dict[str, Any] = {}
    for name, by_id in scores.items():
        entry: dict[str, Any] = {}
        for metric in ("nll", SCORE):
            entry[metric] = _mean([by_id[i.id][metric] for i in items if i.id in by_id])
            entry[f"{metric}_by_family"] = {
                f: _mean([by_id[i.id][metric] for i in items if i.family == f and i.id in by_id])
                for f in families
            }
        entry["edit_nll_worse_than_base"] = sorted(
            i.id
            for i in items
            if i.id in by_id and i.id in base and by_id[i.id][SCORE] > base[i.id][SCORE] + 0.01
        )
        if all("fixed" in by_id.get(i.id, {}) for i in items):
            entry["pass_rate"] = _mean([float(by_id[i.id]["fixed"]) for i in items])
            entry["pass_by_family"] = {
                f: _mean([float(by_id[i.id]["fixed"]) for i in items if i.family == f]) for f in families
            }
            entry["regressions"] = sorted(
                i.id for i in items if base.get(i.id, {}).get("fixed") and not by_id[i.id]["fixed"]
            )
        out[name] = entry
    return out


def _sweep_point(
    previous: Mapping[str, Any] | None, scores: Mapping[str, Mapping[str, Any]], **extra: Any
) -> dict[str, Any]:
    """A sweep point: −mean edit NLL, the pass rate and fixed koans when generated, and ``extra``. A point
    re-run to add pass outcomes keeps the earlier run's numbers under ``earlier_run`` (a reproducibility
    check: retrained coefficients should score the same)."""
    point: dict[str, Any] = {"score": -_mean([v[SCORE] for v in scores.values()]), **extra}
    if all("fixed" in v for v in scores.values()):
        point["pass_rate"] = _mean([float(v["fixed"]) for v in scores.values()])
        point["fixed"] = sorted(k for k, v in scores.items() if v["fixed"])
    return {**point, **_earlier(previous)}


def _earlier(previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"earlier_run": …}`` with the first recorded score and final loss of a point run again."""
    if not previous:
        return {}
    earlier = previous.get("earlier_run") or {
        k: previous[k] for k in ("score", "final_loss") if k in previous
    }
    return {"earlier_run": earlier}


def _brief(point: Mapping[str, Any]) -> str:
    keys = ("score", "pass_rate", "bytes", "k", "final_loss", "phi_used")
    return ", ".join(
        f"{k}={point[k]:.4g}" if isinstance(point[k], float) else f"{k}={point[k]}"
        for k in keys
        if k in point
    )


def _average_coefficients(coeffs: Sequence[Mapping[str, TaskCoefficients]]) -> dict[str, TaskCoefficients]:
    keys = coeffs[0].keys()
    return {
        k: TaskCoefficients(
            eb=torch.stack([c[k].eb.float() for c in coeffs]).mean(0),
            ea=torch.stack([c[k].ea.float() for c in coeffs]).mean(0),
        )
        for k in keys
    }


def _renamed(seed: LoraSeed, name: str) -> LoraSeed:
    return LoraSeed(name=name, layers=seed.layers, base_model_id=seed.base_model_id)


def _layer_keys(seed: LoraSeed) -> list[str]:
    return sorted(seed.layers)


def _lora_bytes(seed: LoraSeed) -> int:
    return 4 * sum(layer.a.numel() + layer.b.numel() for layer in seed.layers.values())


def _mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else math.nan


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed), held for the block."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _atomic_write(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


__all__ = ["SCORE", "STAGES", "Experiment", "ExperimentConfig"]
