"""The night's training data: verified fixes survive the dedup, gate/test pool problems never become
training data (tiny model, real sandbox, SQLite)."""

from __future__ import annotations

from pathlib import Path

from agent.episodes import ProblemRecord
from agent.koans import eval_koans
from agent.pools import build_pools
from service.app_services import Services
from service.db.repositories import EpisodeRepository, RunRepository
from service.jobs import RunContext
from service.night import collect_pairs
from tests.test_service_api import make_settings

SOURCE = 'fn main() {\n    let total: i32 = "seven";\n    println!("{}", total);\n}\n'
FIX_A = 'fn main() {\n    let total: i32 = 7;\n    println!("{}", total);\n}\n'
FIX_B = 'fn main() {\n    let total: &str = "seven";\n    println!("{}", total);\n}\n'


def _record(pid: str, source: str, fixed: str) -> ProblemRecord:
    return ProblemRecord(
        problem_id=pid,
        content_hash=pid.ljust(64, "0"),
        family=None,
        source=source,
        final_code=fixed,
        fixed=True,
        verified=True,
        steps_to_green=1,
        final_status="fixed",
        strategy="serve",
        error_codes=["E0308"],
    )


def test_distinct_verified_fixes_survive_and_pool_problems_are_dropped(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = make_settings(tmp_path, tiny_model_dir)
    services = Services.build(settings)
    pools = build_pools(20, 20, eval_koans())
    in_pool = pools.gate[0]
    with services.db.session() as s:
        repo = EpisodeRepository(s)
        repo.save(
            _record("day-a", SOURCE, FIX_A), origin="day", problem_ref="day-a", mode="bin", edition="2021"
        )
        repo.save(
            _record("req-b", SOURCE, FIX_B), origin="client", problem_ref="req-b", mode="bin", edition="2021"
        )
        repo.save(
            _record("req-c", in_pool.broken, in_pool.fixed),
            origin="client",
            problem_ref="req-c",
            mode=in_pool.mode,
            edition=in_pool.edition,
        )
        run_id = RunRepository(s).create("night", "cli").id
    ctx = RunContext(run_id, "night", services.db, settings)
    pairs = collect_pairs(ctx, services.serving.sandbox, pools=pools)
    fixes = {p.fixed for p in pairs if p.source == SOURCE}
    assert fixes == {FIX_A, FIX_B}  # main kept only the first fix of a program
    assert not any(pools.blocks(p.source) or pools.blocks(p.fixed) for p in pairs)
    assert ctx.summary["pairs_blocked_as_pool"] >= 1
    services.stop()
