"""The day: practise on a rotating slice of the train koans and retry recent client problems that failed.
Every attempt becomes an episode; the verified fixes are what the next night learns from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.koans import train_koans
from agent.problems import Problem
from service.compose import serving_strategy
from service.db.repositories import EpisodeRepository, MetricRepository
from service.jobs import RunContext
from service.serving import ServingRuntime


class Day:
    def __init__(self, serving: ServingRuntime, koans_dir: Path | None = None) -> None:
        self.serving = serving
        self.koans_dir = koans_dir

    def __call__(self, ctx: RunContext) -> dict[str, Any]:
        if not self.serving.model_ready:
            raise RuntimeError(self.serving.model_error or "the model is not loaded yet")
        settings = ctx.settings
        koans = train_koans(self.koans_dir)
        n = min(settings.day.koans_per_day, len(koans))
        start = (ctx.run_id * n) % max(1, len(koans))
        picked = [koans[(start + i) % len(koans)] for i in range(n)]
        problems = [Problem.from_koan(k) for k in picked]
        refs: dict[str, tuple[str, str, str, str]] = {k.id: ("koan", k.id, k.mode, k.edition) for k in picked}
        with ctx.db.session() as s:
            for p in EpisodeRepository(s).recent_client_failures(settings.day.client_retries):
                pid = f"retry-{p.id}"
                problems.append(Problem(pid, p.source, p.mode, p.edition, None, None))
                refs[pid] = ("day", p.problem_ref, p.mode, p.edition)
        ctx.log(f"practising {len(picked)} train koans and {len(problems) - len(picked)} client retries")
        records = self.serving.make_loop(self.serving.pinned_snapshot()).run(
            problems, serving_strategy(settings)
        )
        fixed = sum(r.fixed for r in records)
        with ctx.db.session() as s:
            repo = EpisodeRepository(s)
            for record in records:
                origin, ref, mode, edition = refs[record.problem_id]
                repo.save(
                    record, origin=origin, problem_ref=ref, mode=mode, edition=edition, run_id=ctx.run_id
                )
            if records:
                MetricRepository(s).record("day_pass_rate", fixed / len(records), {}, ctx.run_id)
        ctx.log(f"fixed {fixed}/{len(records)}")
        return {"problems": len(records), "fixed": fixed, "koans": [k.id for k in picked]}
