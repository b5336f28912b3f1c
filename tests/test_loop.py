"""The fix loop against the real sandbox (rustc in its jail) and, once, the real tiny model.

The model is replaced by small scripted ``generate`` callables where a test needs a known reply (the tiny
model's replies are random text): that is the loop's real interface, and rustc judges every candidate.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest

from agent.diagnostics import Diagnostic, parse_rendered
from agent.koans import load_koans
from agent.loop import CODE_OPENING, STRATEGIES, FixLoop, Problem, RowKey, Strategy
from agent.metrics import repeat_error_rate
from agent.prompt import format_program_answer
from agent.sandbox import Sandbox, SandboxConfig
from router import Route, TaskRouter, make_route_fn

Messages = list[dict[str, str]]
_PROGRAM = re.compile(r"```rust\n(.*?)\n```", re.S)


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int = 100
    completion_tokens: int = 20
    seconds: float = 0.5
    stopped_by: str = "eos"


class Scripted:
    """A generate callable: ``answer(program_in_prompt, user_message) -> reply text``; records every call."""

    def __init__(self, answer: Callable[[str, str], str]) -> None:
        self.answer = answer
        self.calls: list[tuple[list[Messages], list[RowKey] | None]] = []

    def __call__(self, prompts: list[Messages], row_keys: list[RowKey] | None) -> list[Reply]:
        self.calls.append((prompts, row_keys))
        replies = []
        for messages in prompts:
            user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
            match = _PROGRAM.search(user)
            assert match is not None, "the prompt must show the program in a rust block"
            replies.append(Reply(self.answer(match.group(1), user)))
        return replies


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    return Sandbox(SandboxConfig(cache_dir=tmp_path_factory.mktemp("sandbox-cache")))


def _route() -> Callable[[Sequence[Diagnostic]], Route]:
    return make_route_fn(TaskRouter(), {})


def _never(prompts: list[Messages], row_keys: list[RowKey] | None) -> list[Reply]:
    raise AssertionError("the model must not be asked")


LIB_BROKEN = """\
pub fn double(x: i32) -> i32 {
    let factor: i32 = "2";
    x * factor
}
"""
LIB_FIXED = LIB_BROKEN.replace('"2"', "2")
LIB_TESTS = "#[test]\nfn doubles() { assert_eq!(double(4), 8); }\n"


def test_reference_fixes_pass_in_one_batched_round(sandbox: Sandbox) -> None:
    by_id = {k.id: k for k in load_koans()}
    koans = [by_id[i] for i in ("moves-001", "borrows-002", "lifetimes-001", "traits-003")]
    fixes = {k.broken.strip(): k.fixed for k in koans}
    generate = Scripted(lambda program, _: format_program_answer(fixes[program.strip()]))
    loop = FixLoop(sandbox, generate, _route(), "scripted-model")
    records = loop.run([Problem.from_koan(k) for k in koans], STRATEGIES["loop"])

    assert len(generate.calls) == 1 and len(generate.calls[0][0]) == 4  # one batched call
    assert generate.calls[0][1] == [None] * 4  # no published coefficients: base rows
    for koan, record in zip(koans, records, strict=True):
        assert (record.fixed, record.verified, record.final_status, record.steps_to_green) == (
            True,
            True,
            "fixed",
            1,
        )
        assert record.final_code.strip() == koan.fixed.strip()
        assert record.error_codes == sorted(koan.codes)
        (attempt,) = record.attempts
        assert attempt.verdict == "ok" and attempt.fixed and attempt.strategy == "model"
        assert attempt.error_codes_before == sorted(koan.codes) and attempt.error_codes_after == []
        assert attempt.diff.startswith("--- a/src/main.rs") and "\n+" in attempt.diff
        assert attempt.route_task == koan.family and attempt.route_version is None
        assert attempt.prompt_hash and attempt.model_id == "scripted-model"
        assert (attempt.prompt_tokens, attempt.completion_tokens) == (100, 20)
        assert attempt.check_seconds > 0 and record.content_hash == Problem.from_koan(koan).content_hash


def test_a_fix_that_compiles_but_breaks_the_tests_is_rejected_with_feedback(sandbox: Sandbox) -> None:
    stub = "pub fn double(x: i32) -> i32 {\n    0\n}\n"

    def answer(program: str, user: str) -> str:
        return format_program_answer(LIB_FIXED if "tests failed" in user else stub)

    generate = Scripted(answer)
    loop = FixLoop(sandbox, generate, _route(), "m")
    problem = Problem("double", LIB_BROKEN, "lib", "2021", LIB_TESTS, "type_mismatch")
    (record,) = loop.run([problem], Strategy("loop", max_attempts=3))
    first, second = record.attempts
    assert (first.verdict, first.fixed, first.note) == ("test_failed", False, "compiles, but the tests fail")
    assert second.fixed and record.steps_to_green == 2
    assert record.final_code == LIB_FIXED


def test_an_unchanged_reply_changes_course_and_no_prompt_is_sent_twice(sandbox: Sandbox) -> None:
    echo = Scripted(lambda program, _: format_program_answer(program))
    sampled_seeds: list[int] = []

    def sample(prompts: list[Messages], row_keys: list[RowKey] | None, seed: int) -> list[Reply]:
        sampled_seeds.append(seed)
        return echo(prompts, row_keys)

    loop = FixLoop(sandbox, echo, _route(), "m", sample=sample)
    problem = Problem("double", LIB_BROKEN, "lib", "2021", LIB_TESTS)
    (record,) = loop.run([problem], Strategy("loop", max_attempts=4, hints=False))

    assert [a.note for a in record.attempts] == ["unchanged reply"] * 4
    # Stall 1: hints on. Stall 2: the other answer format, and sampling from then on (a fresh seed each time).
    assert [a.strategy for a in record.attempts] == [
        "model",
        "model+hints",
        "model+hints+edits+sampled",
        "model+hints+sampled",
    ]
    greedy_prompts = [a.prompt_hash for a in record.attempts if "sampled" not in a.strategy]
    assert len(set(greedy_prompts)) == len(greedy_prompts)
    assert len(sampled_seeds) == 2 and sampled_seeds[0] != sampled_seeds[1]
    assert "Hints:" in echo.calls[1][0][0][-1]["content"]
    assert "A previous attempt failed: the reply changed nothing" in echo.calls[1][0][0][-1]["content"]
    assert not record.fixed and record.final_status == "unfixed" and record.steps_to_green is None
    assert repeat_error_rate([record]) == 1.0


def test_a_candidate_with_fewer_errors_becomes_the_program_to_fix(sandbox: Sandbox) -> None:
    two_errors = 'pub fn total(xs: &[i32]) -> i32 {\n    let sum = 0;\n    for x in xs {\n        sum += x;\n    }\n    let y: i32 = "1";\n    sum * y\n}\n'
    halfway = two_errors.replace('let y: i32 = "1";', "let y: i32 = 1;")
    fixed = halfway.replace("let sum = 0;", "let mut sum = 0;")
    seen_programs: list[str] = []

    def answer(program: str, user: str) -> str:
        seen_programs.append(program)
        return format_program_answer(halfway if program.strip() == two_errors.strip() else fixed)

    tests = "#[test]\nfn sums() { assert_eq!(total(&[1, 2, 3]), 6); }\n"
    loop = FixLoop(sandbox, Scripted(answer), _route(), "m")
    (record,) = loop.run(
        [Problem("total", two_errors, "lib", "2021", tests)], Strategy("loop", max_attempts=3)
    )
    # rustc reports the borrow error only once the type error is gone: a later phase counts as progress.
    assert [a.note for a in record.attempts] == [
        "progress: only later-phase (borrow checker) errors remain",
        "",
    ]
    assert record.attempts[0].error_codes_before == ["E0308"]
    assert record.attempts[0].error_codes_after == ["E0596"]  # `sum += x` needs `let mut sum`
    assert seen_programs[1].strip() == halfway.strip()
    assert record.fixed and record.steps_to_green == 2


def test_rustc_suggestions_alone_can_fix_without_the_model(sandbox: Sandbox) -> None:
    source = 'fn main() {\n    let count = 1;\n    count = 2;\n    println!("{count}");\n}\n'
    loop = FixLoop(sandbox, _never, _route(), None)
    (record,) = loop.run([Problem("mut", source, "bin", "2021")], STRATEGIES["rustfix"])
    (attempt,) = record.attempts
    assert attempt.strategy == "suggestions" and attempt.fixed and attempt.model_id is None
    assert "let mut count = 1;" in record.final_code and record.steps_to_green == 1


def test_already_compiling_and_invalid_programs_need_no_attempt(sandbox: Sandbox) -> None:
    loop = FixLoop(sandbox, _never, _route(), None)
    ok, bad = loop.run(
        [
            Problem("ok", "fn main() {}\n"),
            Problem("bad", "fn main() {}\n", "bin", "2099"),
        ],
        STRATEGIES["loop"],
    )
    assert (ok.fixed, ok.final_status, ok.steps_to_green, ok.attempts) == (True, "already_ok", 0, [])
    assert (bad.fixed, bad.final_status, bad.attempts) == (False, "invalid_input", [])
    with pytest.raises(ValueError, match="unique"):
        loop.run([Problem("x", "fn main() {}"), Problem("x", "fn main() {}")], STRATEGIES["loop"])


def test_code_needing_unavailable_crates_is_answered_but_unverified(sandbox: Sandbox) -> None:
    source = (
        "use serde::Serialize;\n\n#[derive(Serialize)]\nstruct P { x: i32 }\n\n"
        'fn main() {\n    let p = P { x: "1" };\n    println!("{}", serde_json::to_string(&p).unwrap());\n}\n'
    )
    client_output = (
        'error[E0308]: mismatched types\n --> src/main.rs:7:20\n  |\n7 |     let p = P { x: "1" };\n'
        "  |                    ^^^ expected `i32`, found `&str`\n"
    )
    fixed = source.replace('x: "1"', "x: 1")
    generate = Scripted(lambda program, _: format_program_answer(fixed))
    loop = FixLoop(sandbox, generate, _route(), "m")
    problem = Problem("crates", source, "bin", "2021", None, None, tuple(parse_rendered(client_output)))
    (record,) = loop.run([problem], STRATEGIES["loop-suggest"])
    assert not record.verified and record.final_status == "unverified"
    assert record.fixed and record.final_code == fixed
    assert record.attempts[-1].route_task == "type_mismatch"  # routed by the client's diagnostics
    assert "error[E0308]" in generate.calls[0][0][0][-1]["content"]


def test_routes_reach_generate_as_task_keys(sandbox: Sandbox) -> None:
    by_id = {k.id: k for k in load_koans()}
    koans = [by_id["moves-001"], by_id["borrows-002"]]
    fixes = {k.broken.strip(): k.fixed for k in koans}
    generate = Scripted(lambda program, _: format_program_answer(fixes[program.strip()]))
    loop = FixLoop(sandbox, generate, make_route_fn(TaskRouter(), {"moves": 7}), "m")
    moves, borrows = loop.run([Problem.from_koan(k) for k in koans], STRATEGIES["base"])
    assert generate.calls[0][1] == [("moves", 7), None]
    assert (moves.attempts[0].route_task, moves.attempts[0].route_version) == ("moves", 7)
    assert (borrows.attempts[0].route_task, borrows.attempts[0].route_version) == ("borrows", None)


@pytest.mark.slow
def test_the_real_tiny_runtime_end_to_end(sandbox: Sandbox, tiny_runtime: object) -> None:
    from learner.runtime import GenerationParams, ModelRuntime
    from service.compose import model_fns

    assert isinstance(tiny_runtime, ModelRuntime)
    koans = [k for k in load_koans() if k.is_eval][:2]
    generate, _ = model_fns(tiny_runtime, GenerationParams(max_new_tokens=16))
    loop = FixLoop(sandbox, generate, _route(), tiny_runtime.model_id)
    records = loop.run([Problem.from_koan(k) for k in koans], Strategy("loop", max_attempts=2))
    for record in records:
        assert not record.fixed and record.final_status == "unfixed"  # random weights fix nothing
        assert len(record.attempts) == 2
        for attempt in record.attempts:
            assert attempt.model_id == "tiny-qwen2-seed0" and attempt.prompt_tokens > 100
            # A reply without code is continued once inside the same attempt: up to twice the token limit.
            limit = 32 if CODE_OPENING in attempt.reply else 16
            assert 0 < attempt.completion_tokens <= limit and attempt.note


def _too_long_for_the_tiny_model(name: str) -> str:
    """A program with one type error whose prompt alone outgrows the tiny model's 2,048-token context."""
    padding = "".join(
        f"    // {name} padding line {i:04d}: the quick brown fox jumps over the lazy dog\n"
        for i in range(120)
    )
    return f'fn main() {{\n{padding}    let n: i32 = "{name}";\n    println!("{{n}}");\n}}\n'


@pytest.mark.parametrize("best_of", [1, 3], ids=["greedy", "best-of-3"])
def test_a_problem_longer_than_the_context_ends_with_a_verdict_and_the_batch_goes_on(
    sandbox: Sandbox, tiny_runtime: object, best_of: int
) -> None:
    from learner.runtime import GenerationParams, ModelRuntime
    from service.compose import model_fns

    assert isinstance(tiny_runtime, ModelRuntime)
    short = 'fn main() {\n    let n: i32 = "short";\n    println!("{n}");\n}\n'
    generate, sample = model_fns(tiny_runtime, GenerationParams(max_new_tokens=8))
    loop = FixLoop(sandbox, generate, _route(), tiny_runtime.model_id, sample=sample)
    problems = [Problem("long", _too_long_for_the_tiny_model("long")), Problem("short", short)]
    strategy = Strategy("loop", max_attempts=2, best_of=best_of, sample_from=0)
    long, fits = loop.run(problems, strategy)
    assert long.final_status == "prompt_too_long" and not long.fixed
    [attempt] = long.attempts
    assert attempt.verdict == "prompt_too_long" and attempt.model_id is None
    assert "context of 2048 tokens" in attempt.note
    # The problem that fits was still asked, in the same rounds.
    assert fits.final_status == "unfixed" and len(fits.attempts) == 2
    assert all(a.model_id == tiny_runtime.model_id and a.prompt_tokens > 0 for a in fits.attempts)
    assert all(("best-of" in a.strategy) == (best_of > 1) for a in fits.attempts), fits.attempts


def test_a_reply_that_only_explains_is_continued_into_code_within_one_attempt(sandbox: Sandbox) -> None:
    fixed = 'fn main() {\n    let mut count = 1;\n    count = 2;\n    println!("{count}");\n}\n'
    broken = fixed.replace("let mut", "let")
    seen: list[Messages] = []

    def generate(prompts: list[Messages], row_keys: list[RowKey] | None) -> list[Reply]:
        seen.extend(prompts)
        out = []
        for messages in prompts:
            if messages[-1]["role"] == "assistant":  # the continuation: the fence is already open
                assert messages[-1]["content"].endswith(CODE_OPENING)
                out.append(Reply(fixed + "```", completion_tokens=30, seconds=1.0))
            else:
                out.append(
                    Reply("`count` is assigned twice, so it must be declared `mut`.", completion_tokens=12)
                )
        return out

    loop = FixLoop(sandbox, generate, _route(), "scripted")
    [record] = loop.run([Problem("p", broken)], Strategy("loop", max_attempts=2))
    assert record.fixed and len(record.attempts) == 1
    attempt = record.attempts[0]
    assert attempt.completion_tokens == 42 and attempt.generate_seconds == pytest.approx(1.5)
    assert attempt.reply.startswith("`count` is assigned twice") and CODE_OPENING in attempt.reply
    assert len(seen) == 2 and seen[1][:-1] == seen[0]  # same prompt, plus the assistant's own start


def test_a_deadline_passing_mid_reply_ends_the_loop_with_the_attempts_so_far(sandbox: Sandbox) -> None:
    """The request's deadline cuts the first reply (``stopped_by == "deadline"``, no code yet): that reply is
    not continued (a continuation would run past the deadline), it is recorded as the attempt it is, and no
    further round starts — the deadline stops the loop, not only the running generation."""
    broken = 'fn main() {\n    let count = 1;\n    count = 2;\n    println!("{count}");\n}\n'
    calls: list[list[Messages]] = []

    def generate(prompts: list[Messages], row_keys: list[RowKey] | None) -> list[Reply]:
        calls.append(prompts)
        return [Reply("`count` is assigned twice, so", stopped_by="deadline") for _ in prompts]

    loop = FixLoop(sandbox, generate, _route(), "scripted")
    strategy = Strategy("loop", max_attempts=4, suggestions_first=False)
    [record] = loop.run([Problem("p", broken)], strategy, should_stop=lambda: bool(calls))
    assert len(calls) == 1 and calls[0][0][-1]["role"] == "user"  # no continuation, no second round
    assert len(record.attempts) == 1 and not record.fixed
    assert record.attempts[0].note == "no code in the reply"
    assert record.attempts[0].reply == "`count` is assigned twice, so"
    assert record.final_status == "unfixed"


def test_best_of_n_samples_rows_in_one_call_verifies_them_all_and_takes_a_passing_one(
    sandbox: Sandbox,
) -> None:
    """Round 1 greedy fails; round 2 samples 4 rows of the same prompt in one call (the runtime's per-row
    seeds make them differ); only row 2 fixes the program, and it is the one taken."""
    wrong = LIB_BROKEN.replace('"2"', '"two"')
    greedy = Scripted(lambda program, _: format_program_answer(wrong))
    calls: list[tuple[int, int]] = []

    def sample(prompts: list[Messages], row_keys: list[RowKey] | None, seed: int) -> list[Reply]:
        calls.append((len(prompts), seed))
        assert row_keys == [None] * len(prompts)
        bad = format_program_answer(LIB_BROKEN.replace('"2"', "2.0"))
        return [Reply(format_program_answer(LIB_FIXED) if i == 2 else bad) for i in range(len(prompts))]

    loop = FixLoop(sandbox, greedy, _route(), "m", sample=sample)
    problem = Problem("double", LIB_BROKEN, "lib", "2021", LIB_TESTS)
    (record,) = loop.run([problem], Strategy("bo4", max_attempts=3, best_of=4))
    assert calls == [(4, calls[0][1])], "one batched call of 4 rows"
    first, second = record.attempts
    assert not first.fixed and first.strategy == "model"
    assert (
        second.fixed
        and second.strategy.startswith("model+best-of-4")
        and "(1/2 distinct passed)" in second.strategy
    )
    assert record.final_code == LIB_FIXED and record.steps_to_green == 2
    # Both distinct candidates were checked: the losing one's check time is charged to the attempt.
    assert second.check_seconds > 0


def test_best_of_n_without_a_passing_row_continues_from_the_best_candidate(sandbox: Sandbox) -> None:
    echo = Scripted(lambda program, _: format_program_answer(program))

    def sample(prompts: list[Messages], row_keys: list[RowKey] | None, seed: int) -> list[Reply]:
        return echo(prompts, row_keys)  # every row unchanged

    loop = FixLoop(sandbox, echo, _route(), "m", sample=sample)
    problem = Problem("double", LIB_BROKEN, "lib", "2021", LIB_TESTS)
    (record,) = loop.run([problem], Strategy("bo4", max_attempts=2, best_of=4, sample_from=0))
    assert [a.note for a in record.attempts] == ["unchanged replies", "unchanged replies"]
    assert all(a.strategy.startswith("model+best-of-4") for a in record.attempts)
    assert not record.fixed


def test_best_of_is_bounded() -> None:
    with pytest.raises(ValueError, match="best_of"):
        Strategy("x", best_of=0)
    with pytest.raises(ValueError, match="best_of"):
        Strategy("x", best_of=65)
