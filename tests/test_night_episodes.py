"""Verified served replies become training examples word for word, with the prompt they were generated from
(issue 16, item 1): the real loop (scripted replies: the tiny model fixes nothing), the real sandbox, SQLite."""

from __future__ import annotations

from pathlib import Path

from agent.loop import FixLoop, Problem, Strategy
from agent.pools import build_pools
from agent.prompt import build_messages, format_program_answer
from router import RouteTable, TaskRouter, make_route_fn
from service.app_services import Services
from service.db.repositories import EpisodeRepository, RunRepository
from service.jobs import RunContext
from service.night import collect_pairs, examples_by_task
from service.serving import ServingRuntime
from tests.helpers import make_settings
from tests.test_loop import LIB_BROKEN, LIB_FIXED, LIB_TESTS, Scripted

BIN_BROKEN = 'fn main() {\n    let total: i32 = "7";\n    println!("{total}");\n}\n'
BIN_FIXED = BIN_BROKEN.replace('"7"', "7")
STUB = "pub fn double(x: i32) -> i32 {\n    0\n}\n"


def answer(program: str, user: str) -> str:
    if "total" in program:
        return "Cause: a string where an i32 is wanted.\n" + format_program_answer(BIN_FIXED)
    if "tests failed" in user:  # the feedback prompt after the stub
        return "Cause: the stub broke the tests.\n" + format_program_answer(LIB_FIXED)
    return format_program_answer(STUB)


def test_verified_first_replies_are_kept_with_their_prompt_and_feedback_replies_are_not_guessed(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = make_settings(tmp_path, tiny_model_dir)
    settings.night.tasks = None
    settings.night.min_examples_per_task = 1
    services = Services.build(settings)
    sandbox = services.serving.sandbox
    loop = FixLoop(sandbox, Scripted(answer), make_route_fn(TaskRouter(), RouteTable()), "scripted")
    strategy = Strategy("serve", max_attempts=3, suggestions_first=False, hints=settings.agent.hints)
    first, second = loop.run(
        [
            Problem("total", BIN_BROKEN, "bin", "2021"),
            Problem("double", LIB_BROKEN, "lib", "2021", LIB_TESTS),
        ],
        strategy,
    )
    assert first.fixed and [a.attempt for a in first.attempts] == [0]
    assert second.fixed and len(second.attempts) == 2 and second.attempts[1].fixed  # fixed on feedback
    with services.db.session() as s:
        for record, mode in ((first, "bin"), (second, "lib")):
            EpisodeRepository(s).save(
                record, origin="client", problem_ref=record.problem_id, mode=mode, edition="2021"
            )
        run_id = RunRepository(s).create("night", "test").id
    ctx = RunContext(run_id, "night", services.db, settings)
    pools = build_pools(4, 4, [])
    pairs = [p for p in collect_pairs(ctx, sandbox, pools=pools) if p.origin == "client"]
    assert sorted(len(p.replies) for p in pairs) == [1, 1]
    shadow = ServingRuntime(settings, services.db, sandbox, lambda: None)  # type: ignore[arg-type,return-value]
    data = examples_by_task(ctx, pairs, sandbox, shadow)
    examples = [e for task_examples in data.values() for e in task_examples]

    diagnostics = sandbox.check(BIN_BROKEN, "bin", "2021").diagnostics
    prompt = build_messages(BIN_BROKEN, diagnostics, hints=settings.agent.hints)
    assert (prompt, first.attempts[0].reply) in examples  # word for word, with the serving prompt
    assert not any(answer == second.attempts[1].reply for _, answer in examples)  # its prompt was feedback
    assert ctx.summary["episode_replies"] == {"verified": 2, "kept": 1, "prompt_not_rebuilt": 1}
    services.stop()
