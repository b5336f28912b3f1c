"""The night's wall budget and progress (issue 16, item 5).

The night runs in four stages, each ending by a share of ``night.wall_budget_s`` (``STAGE_ENDS``, cumulative:
a stage that ends early leaves its time to the next): ``data`` (self-generated targets: greedy replies and
samples, the costly part of the data), ``baseline`` (the served version on the gate pool and the eval
koans), ``train`` (LoRA seeds or Phase 2 steps) and ``gate`` (each candidate on its gate-pool subset).
``data`` and ``train`` stop in time: past their deadline the remaining problems get their reference target
and training ends after the current step (every task gets at least one; each task may use an equal share
of the train stage's remaining time, ``share_deadline``) — the night carries on with what it has and says so
in ``summary["budget"]``. The baseline and gate are never cut (a half-run gate decides nothing); an
overrun shows in the progress.

``summary["progress"]`` (stage, done, total, elapsed and remaining estimates) and ``summary["peak_rss_mb"]``
are written into the run row every ``night.progress_every_s`` seconds or ``night.progress_every_items``
items, and at every stage change, with a log line: ``GET /admin/runs/{id}`` shows them while the night runs.
"""

from __future__ import annotations

import copy
import resource
import sys
import time
from collections.abc import Callable

from service.db.repositories import RunRepository
from service.jobs import RunContext

#: Cumulative share of the wall budget by the end of each stage.
STAGE_ENDS = {"data": 0.35, "baseline": 0.5, "train": 0.8, "gate": 1.0}
STOPPABLE = frozenset({"data", "train"})  # the baseline and the gate are never cut: they decide


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


class NightProgress:
    def __init__(
        self,
        ctx: RunContext,
        *,
        budget_s: float,
        every_s: float,
        every_items: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ctx = ctx
        self.budget_s = budget_s
        self.every_s = every_s
        self.every_items = max(1, every_items)
        self.clock = clock
        self.started = clock()
        self.name = "start"
        self.stage_started = self.started
        self.done = self.total = 0
        self._written_at = self.started
        self._written_done = 0
        ctx.summary["budget"] = {"wall_s": budget_s, "status": "within budget", "stopped_early": []}

    # ------------------------------------------------------------------------------------------ stages
    def stage(self, name: str, total: int) -> None:
        if name not in STAGE_ENDS:
            raise ValueError(f"unknown night stage {name!r}")
        self.name, self.total, self.done = name, total, 0
        self.stage_started = self.clock()
        self.write(log=True)

    def add_total(self, n: int) -> None:
        self.total += n

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self._written_at >= self.every_s or self.done - self._written_done >= self.every_items:
            self.write(log=True)

    def deadline(self) -> float:
        return self.started + self.budget_s * STAGE_ENDS.get(self.name, 1.0)

    def share_deadline(self, parts: int) -> float:
        """The instant one of ``parts`` equal shares of the stage's remaining time ends, from now: training
        gives each task left ``(deadline − now) / tasks left``."""
        now = self.clock()
        return now + max(0.0, self.deadline() - now) / max(1, parts)

    def over_budget(self) -> bool:
        """True once a stoppable stage has used its share of the budget."""
        return self.name in STOPPABLE and self.clock() >= self.deadline()

    def stopped(self, what: str) -> None:
        """The current stage ends early: recorded (summary and log) with how far it got."""
        entry = {"stage": self.name, "what": what, "done": self.done, "total": self.total}
        budget = self.ctx.summary["budget"]
        budget["stopped_early"].append(entry)
        budget["status"] = "stopped early (wall budget): " + "; ".join(
            f"{e['stage']} {e['what']} at {e['done']}/{e['total']}" for e in budget["stopped_early"]
        )
        self.ctx.log(
            f"wall budget: stage {self.name} ends early ({what}) at {self.done}/{self.total}, "
            f"{self.clock() - self.started:.0f} s of {self.budget_s:.0f} s"
        )
        self.write()

    def finish(self) -> None:
        self.name, self.done, self.total = "done", 0, 0
        self.ctx.summary["night_seconds"] = round(self.clock() - self.started, 1)
        self._fill()

    # ----------------------------------------------------------------------------------------- reports
    def snapshot(self) -> dict[str, object]:
        now = self.clock()
        elapsed, in_stage = now - self.started, now - self.stage_started
        stage_eta = in_stage / self.done * max(0, self.total - self.done) if self.done else None
        left = max(0.0, self.budget_s - elapsed)
        # remaining: this stage at its rate (or its deadline, if it is cut there), then the later stages'
        # shares of the budget — an upper estimate for them, since every stage may end early
        later = self.budget_s * (1.0 - STAGE_ENDS.get(self.name, 1.0))
        if stage_eta is None:
            eta = None
        elif self.name in STOPPABLE:
            eta = min(stage_eta, max(0.0, self.deadline() - now)) + later
        else:
            eta = stage_eta
        return {
            "stage": self.name,
            "done": self.done,
            "total": self.total,
            "elapsed_s": round(elapsed, 1),
            "stage_elapsed_s": round(in_stage, 1),
            "stage_eta_s": None if stage_eta is None else round(stage_eta, 1),
            "eta_s": None if eta is None else round(eta, 1),
            "budget_left_s": round(left, 1),
        }

    def _fill(self) -> dict[str, object]:
        progress = self.snapshot()
        self.ctx.summary["progress"] = progress
        self.ctx.summary["peak_rss_mb"] = peak_rss_mb()
        return progress

    def write(self, *, log: bool = False) -> None:
        progress = self._fill()
        self._written_at, self._written_done = self.clock(), self.done
        with self.ctx.db.session() as s:
            RunRepository(s).set_summary(self.ctx.run_id, copy.deepcopy(self.ctx.summary))
            if log:
                eta = progress["eta_s"]
                RunRepository(s).append_log(
                    self.ctx.run_id,
                    f"progress: {progress['stage']} {progress['done']}/{progress['total']}, "
                    f"elapsed {progress['elapsed_s']} s, eta {eta if eta is not None else '?'} s, "
                    f"peak rss {self.ctx.summary['peak_rss_mb']} MB",
                )
