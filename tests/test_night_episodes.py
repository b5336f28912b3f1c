"""Verified served replies become training examples word for word, with the prompt they were generated from
(issue 16, item 1): the real loop (scripted replies: the tiny model fixes nothing), the real sandbox, SQLite."""

from __future__ import annotations

from pathlib import Path

from agent.loop import FixLoop, Problem, Strategy
from agent.pools import build_pools
from agent.prompt import build_messages, format_program_answer
from service.app_services import Services
from service.db.repositories import EpisodeRepository, RunRepository
from service.jobs import RunContext
from service.night import collect_pairs, examples_by_task
from service.serving import ServingRuntime
from tests.helpers import make_settings
from tests.test_loop import LIB_BROKEN, LIB_FIXED, LIB_TESTS, Scripted, _route

BIN_BROKEN = 'fn main() {\n    let total: i32 = "7";\n    println!("{total}");\n}\n'
BIN_FIXED = BIN_BROKEN.replace('"7"', "7")
STUB = "pub fn double(x: i32) -> i32 {\n    0\n}\n"
SHOW_BROKEN = 'fn main() {\n    let n: u8 = "3";\n    println!("{n}");\n}\n'
SHOW_FIXED = SHOW_BROKEN.replace('"3"', "3")
SHOW_WORSE = SHOW_FIXED.replace('println!("{n}")', 'println!("{m}")')  # another error instead


def answer(program: str, user: str) -> str:
    if "let n: u8" in program:
        if "A previous attempt failed" in user:  # the compile-error feedback prompt
            return "Cause: the literal must be a number.\n" + format_program_answer(SHOW_FIXED)
        return format_program_answer(SHOW_WORSE)
    if "total" in program:
        return "Cause: a string where an i32 is wanted.\n" + format_program_answer(BIN_FIXED)
    if "tests failed" in user:  # the feedback prompt after the stub
        return "Cause: the stub broke the tests.\n" + format_program_answer(LIB_FIXED)
    return format_program_answer(STUB)


def test_verified_replies_are_kept_with_the_exact_prompt_they_answered_and_unrebuildable_ones_counted(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = make_settings(tmp_path, tiny_model_dir)
    settings.night.tasks = None
    settings.night.min_examples_per_task = 1
    services = Services.build(settings)
    sandbox = services.serving.sandbox
    generate = Scripted(answer)
    loop = FixLoop(sandbox, generate, _route(), "scripted")
    strategy = Strategy("serve", max_attempts=3, suggestions_first=False, hints=settings.agent.hints)
    first, second, third = loop.run(
        [
            Problem("total", BIN_BROKEN, "bin", "2021"),
            Problem("double", LIB_BROKEN, "lib", "2021", LIB_TESTS),
            Problem("show", SHOW_BROKEN, "bin", "2021"),
        ],
        strategy,
    )
    assert first.fixed and [a.attempt for a in first.attempts] == [0]
    assert second.fixed and len(second.attempts) == 2 and second.attempts[0].verdict == "test_failed"
    assert third.fixed and [a.note for a in third.attempts] == ["other errors", ""]
    sent = {(m[-1]["content"],) for prompts, _ in generate.calls for m in prompts}
    with services.db.session() as s:
        for record, mode in ((first, "bin"), (second, "lib"), (third, "bin")):
            EpisodeRepository(s).save(
                record, origin="client", problem_ref=record.problem_id, mode=mode, edition="2021"
            )
        run_id = RunRepository(s).create("night", "test").id
    ctx = RunContext(run_id, "night", services.db, settings)
    pools = build_pools(4, 4, [])
    pairs = [p for p in collect_pairs(ctx, sandbox, pools=pools) if p.origin == "client"]
    assert sorted(len(p.attempts) for p in pairs) == [1, 2, 2]
    shadow = ServingRuntime(settings, services.db, sandbox, lambda: None)  # type: ignore[arg-type,return-value]
    data = examples_by_task(ctx, pairs, sandbox, shadow)
    examples = [e for task_examples in data.values() for e in task_examples]
    replies = {answer: messages for messages, answer in examples}

    diagnostics = sandbox.check(BIN_BROKEN, "bin", "2021").diagnostics
    prompt = build_messages(BIN_BROKEN, diagnostics, hints=settings.agent.hints)
    assert replies[first.attempts[0].reply] == prompt  # word for word, with the serving prompt
    # fixed on a compile-error feedback prompt: kept with exactly the prompt the loop sent
    feedback_prompt = replies[third.attempts[1].reply]
    assert "A previous attempt failed: its change caused other errors." in feedback_prompt[-1]["content"]
    assert (feedback_prompt[-1]["content"],) in sent
    assert second.attempts[1].reply not in replies  # feedback on failing tests: the store has no tests
    assert ctx.summary["episode_replies"] == {"verified": 3, "kept": 2, "prompt_not_rebuilt": 1}
    services.stop()
