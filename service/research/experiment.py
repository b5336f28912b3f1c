"""``dreamfix experiment``: the Share claims measured on Rust repair, stage by stage, resumable.

Everything lives in one experiment folder (``<data_dir>/experiments/<name>/``): the config, the training
examples per task, the LoRA seeds (safetensors), one JSON result per stage and the figures. Each stage skips
work whose artefact already exists, so a long CPU run that is interrupted resumes where it stopped; each
stage is also recorded in the ``experiment_runs`` table (running → succeeded / failed / interrupted).

Stages (one module each in this package, the ``seeds`` stage here; each needs the earlier ones' artefacts,
and builds them when missing):

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
import importlib
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
from learner.routing import TaskKey
from learner.runtime import ModelRuntime
from learner.share.artifacts import load_seed, save_seed
from learner.share.bank import ShareBank
from learner.share.config import TrainConfig
from learner.share.layer import attach_share, detach_share
from learner.share.math import LayerBasis, LoraSeed, TaskCoefficients
from learner.share.phases import Phase2Config, phase1
from learner.share.prefix import FrozenPrefix
from learner.share.seeds import SeedConfig, train_lora_seed
from router import TaskRouter
from service.research import STAGES
from service.research.data import EvalItem, eval_items, prompt_for, task_examples
from service.research.scoring import HINTS_ONE_SHOT, ONE_SHOT, pass_results, reference_nll

#: The score of the R matrices, the heatmap and the sweeps: NLL of the reference fix's changed lines.
SCORE = "edit_nll"


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
    seed_epochs: float = 0.0  # TrainConfig.seed_epochs: > 0, a seed trains at least that many passes
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
    copy_weight: float = 1.0  # edit-weighted loss (TrainConfig.copy_weight); 1 = plain
    # TrainConfig.gradient_checkpointing: memory; the chunked output layer rounds differently, so a resumed run
    # must match it like prefix_cache
    gradient_checkpointing: bool = True

    def __post_init__(self) -> None:
        positive = {"per_task": self.per_task, "max_new_tokens": self.max_new_tokens}
        bad = [f"{k}={v}" for k, v in positive.items() if not v > 0]
        if self.eval_per_family is not None and self.eval_per_family < 1:
            bad.append(f"eval_per_family={self.eval_per_family}")
        if self.phi < 0:
            bad.append(f"phi={self.phi}")
        if bad:
            raise ValueError(f"experiment options must be positive: {', '.join(bad)}")
        if not self.seeds:
            raise ValueError("at least one random seed is needed (--seeds)")
        self.train_config()  # the training options are checked where the night's are

    def train_config(self) -> TrainConfig:
        """The training recipe these options describe: the one ``TrainConfig`` the night also builds from
        (the LoRA seeds take each of ``seeds`` in turn; Phase 2 takes ``data_seed``)."""
        return TrainConfig(
            lora_rank=self.lora_rank,
            target_modules=tuple(self.target_modules),
            seed_steps=self.seed_steps,
            seed_epochs=self.seed_epochs,
            seed_lr=self.seed_lr,
            phase2_steps=self.phase2_steps,
            phase2_lr=self.phase2_lr,
            batch_size=self.batch_size,
            max_length=self.max_length,
            seed=self.data_seed,
            pseudo_rank=self.pseudo_rank,
            threshold=self.threshold,
            k_cap=self.k_cap,
            copy_weight=self.copy_weight,
            gradient_checkpointing=self.gradient_checkpointing,
        )

    @classmethod
    def from_train(cls, train: TrainConfig, **options: Any) -> ExperimentConfig:
        """An experiment on exactly ``train``'s recipe (``--recipe night``: the night's settings)."""
        recipe: dict[str, Any] = {
            "lora_rank": train.lora_rank,
            "target_modules": list(train.target_modules),
            "seed_steps": train.seed_steps,
            "seed_epochs": train.seed_epochs,
            "seed_lr": train.seed_lr,
            "phase2_steps": train.phase2_steps,
            "phase2_lr": train.phase2_lr,
            "batch_size": train.batch_size,
            "max_length": train.max_length,
            "data_seed": train.seed,
            "seeds": [train.seed],
            "pseudo_rank": train.pseudo_rank,
            "threshold": train.threshold,
            "k_cap": train.k_cap,
            "copy_weight": train.copy_weight,
            "gradient_checkpointing": train.gradient_checkpointing,
        }
        clash = sorted(set(recipe) & set(options))
        if clash:
            raise ValueError(f"--recipe night fixes {', '.join(clash)}: drop those options")
        return cls(**recipe, **options)

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
            defaults = asdict(ExperimentConfig())
            changed = sorted(
                k for k in current if k not in RUN_OPTIONS and saved.get(k, defaults[k]) != current[k]
            )
            if changed:
                raise ValueError(
                    f"experiment {self.root.name!r} was started with another config ({', '.join(changed)} "
                    "differ): use a new --name, or the same options to resume"
                )
            if current["pass_rate"] and not saved.get("pass_rate"):
                atomic_write(path, {**saved, "pass_rate": True})  # pass outcomes are being added
        else:
            atomic_write(path, current)

    def result_path(self, stage: str) -> Path:
        return self.root / f"{stage}.json"

    def load_result(self, stage: str) -> dict[str, Any]:
        path = self.result_path(stage)
        return json.loads(path.read_text()) if path.exists() else {}

    def save_result(self, stage: str, result: dict[str, Any]) -> None:
        atomic_write(self.result_path(stage), result)

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
                atomic_write(path, self._examples)
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
            examples = self.examples()[task]
            result = train_lora_seed(
                self.model,
                self.runtime.tokenizer,
                examples,
                f"{task}-s{seed}",
                self._seed_config(seed, len(examples)),
                base_model_id=self.runtime.model_id,
                prefix=self.prefix,
            )
            save_seed(path, result.seed)
            self._log_training(path.stem, result.losses, time.monotonic() - started)

    def _seed_config(self, seed: int, n_examples: int) -> SeedConfig:
        """The LoRA seed recipe for ``n_examples`` training examples (its steps:
        ``TrainConfig.seed_steps_for``, as the night's)."""
        train = self.config.train_config()
        return train.seed_config(
            seed=seed,
            target_modules=self.config.target_names(self.model),
            steps=train.seed_steps_for(n_examples),
        )

    def _phase2_config(self, pseudo_rank: int | None = None, phi: int = 0) -> Phase2Config:
        return self.config.train_config().phase2_config(pseudo_rank=pseudo_rank, phi=phi)

    def _log_training(self, name: str, losses: list[float], seconds: float) -> None:
        path = self.root / "training.json"
        # Stages of one experiment may run in parallel processes: read-modify-write under a lock.
        with _locked(self.root / ".training.lock"):
            data = json.loads(path.read_text()) if path.exists() else {}
            data[name] = {"losses": losses, "seconds": round(seconds, 1)}
            atomic_write(path, data)
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
        keys: Sequence[TaskKey | None] | None = None,
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
            sub_keys = [keys[n] for n, _ in todo] if keys is not None else None
            nll = reference_nll(self.runtime, subset, sub_keys, snapshot, prefix=self.prefix)
            out.update({i.id: dict(v) for (_, i), v in zip(todo, nll, strict=True)})
        if self.pass_on(with_pass):
            todo = [(n, i) for n, i in enumerate(items) if "fixed" not in out[i.id]]
            if todo:
                started = time.monotonic()
                outcomes = pass_results(
                    self.runtime,
                    self.sandbox,
                    [i for _, i in todo],
                    [keys[n] for n, _ in todo] if keys is not None else None,
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

    def task_keys(self, items: Sequence[EvalItem], bank: ShareBank, by: str) -> list[TaskKey | None]:
        """(task, version) per item: its routed task (``routed``) or its true family (``oracle``), as
        installed in ``bank``; None = base."""
        installed = bank.tasks()
        keys: list[TaskKey | None] = []
        for item in items:
            task = item.routed_task if by == "routed" else item.family
            keys.append((task, installed[task]) if task is not None and task in installed else None)
        return keys

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
            [renamed(lora, t) for lora, t in zip(loras, names, strict=True)],
            threshold=kw.get("threshold", self.config.threshold),
            cap=kw.get("cap", self.config.k_cap),
            include_mean=kw.get("include_mean", False),
        )

    def _phi_for(self, bases: Mapping[str, LayerBasis]) -> int:
        limit = min(min(b.k_beta, b.k_alpha) for b in bases.values()) // 4
        return min(self.config.phi, limit)

    # ------------------------------------------------------------------------------------------- driver
    def run(self, stage: str) -> dict[str, Any]:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        runner: Callable[[Experiment], dict[str, Any]] = (
            Experiment.run_seeds
            if stage == "seeds"
            else importlib.import_module(f"service.research.{stage}").run
        )
        started = time.monotonic()
        if self.prefix is not None:
            self.prefix.check()
        result = runner(self)
        result["wall_seconds_this_run"] = round(time.monotonic() - started, 1)
        if self.prefix is not None:
            self.prefix.check()
            result["prefix_cache"] = self.prefix.stats()
        self.save_result(stage, result)
        return result


# ============================================================================================== helpers
def replace_messages(item: EvalItem, messages: list[dict[str, str]]) -> EvalItem:
    from dataclasses import replace

    return replace(item, messages=messages)


def summarise_scores(
    scores: Mapping[str, Mapping[str, Mapping[str, Any]]], items: Sequence[EvalItem], tasks: Sequence[str]
) -> dict[str, Any]:
    families = sorted({i.family for i in items})
    base = scores.get("base", {})
    out: dict[str, Any] = {}
    for name, by_id in scores.items():
        entry: dict[str, Any] = {}
        for metric in ("nll", SCORE):
            entry[metric] = mean([by_id[i.id][metric] for i in items if i.id in by_id])
            entry[f"{metric}_by_family"] = {
                f: mean([by_id[i.id][metric] for i in items if i.family == f and i.id in by_id])
                for f in families
            }
        entry["edit_nll_worse_than_base"] = sorted(
            i.id
            for i in items
            if i.id in by_id and i.id in base and by_id[i.id][SCORE] > base[i.id][SCORE] + 0.01
        )
        if all("fixed" in by_id.get(i.id, {}) for i in items):
            entry["pass_rate"] = mean([float(by_id[i.id]["fixed"]) for i in items])
            entry["pass_by_family"] = {
                f: mean([float(by_id[i.id]["fixed"]) for i in items if i.family == f]) for f in families
            }
            entry["regressions"] = sorted(
                i.id for i in items if base.get(i.id, {}).get("fixed") and not by_id[i.id]["fixed"]
            )
        out[name] = entry
    return out


def average_coefficients(coeffs: Sequence[Mapping[str, TaskCoefficients]]) -> dict[str, TaskCoefficients]:
    keys = coeffs[0].keys()
    return {
        k: TaskCoefficients(
            eb=torch.stack([c[k].eb.float() for c in coeffs]).mean(0),
            ea=torch.stack([c[k].ea.float() for c in coeffs]).mean(0),
        )
        for k in keys
    }


def renamed(seed: LoraSeed, name: str) -> LoraSeed:
    return LoraSeed(name=name, layers=seed.layers, base_model_id=seed.base_model_id)


def layer_keys(seed: LoraSeed) -> list[str]:
    return sorted(seed.layers)


def lora_bytes(seed: LoraSeed) -> int:
    return 4 * sum(layer.a.numel() + layer.b.numel() for layer in seed.layers.values())


def mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else math.nan


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed), held for the block."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def atomic_write(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


__all__ = ["SCORE", "STAGES", "Experiment", "ExperimentConfig"]
