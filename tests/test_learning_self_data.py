"""Self-generated verified training data (service/self_data.py): the tiny model's greedy replies fail, a
planted sampled reply that the real sandbox verifies becomes a training target word for word, and a problem
with no passing sample falls back to its reference fix with a cause sentence, in the serving reply's shape;
replies are judged like the fix loop judges a fix (a test-deleting reply is never a target)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.koans import Koan, train_koans
from agent.prompt import build_messages, format_program_answer, parse_reply
from agent.sandbox import Sandbox, SandboxConfig
from learner.runtime import GenerationParams, ModelRuntime
from service.compose import model_fns
from service.self_data import SelfProblem, Target, cause_sentence, self_generated_targets


@dataclass(frozen=True)
class Reply:
    text: str


def _problem(sandbox: Sandbox, koan: Koan) -> SelfProblem:
    result = sandbox.check(koan.broken, koan.mode, koan.edition)
    assert not result.ok
    return SelfProblem(koan.broken, result.diagnostics, koan.fixed, koan.mode, koan.edition, koan.tests)


def test_a_verified_sampled_reply_becomes_the_target_word_for_word(tiny_runtime: ModelRuntime) -> None:
    sandbox = Sandbox(SandboxConfig())
    koans = [k for k in train_koans() if k.mode == "bin"][:2]
    rescued, unrescued = (_problem(sandbox, k) for k in koans)
    planted = "The value is used after it was moved, so borrow it instead.\n\n" + format_program_answer(
        rescued.fixed
    )
    same_fix_other_words = "Borrow instead of moving.\n" + format_program_answer(rescued.fixed)
    calls: list[tuple[int, int]] = []

    def sample(prompts: list[list[dict[str, str]]], rows: list[int] | None, seed: int) -> list[Reply]:
        calls.append((len(prompts), seed))
        k = len(prompts) // 2
        first = [planted, "no idea", same_fix_other_words] + ["```rust\nfn main() {\n```"] * (k - 3)
        second = ["```rust\n" + unrescued.source + "```"] * k  # the broken program back: no fix
        return [Reply(t) for t in first + second]

    generate, _ = model_fns(tiny_runtime, GenerationParams(max_new_tokens=8), None)
    targets, stats = self_generated_targets(
        [rescued, unrescued], sandbox, generate, sample, k=4, seed=11, hints=True
    )

    assert calls == [(8, 11)]  # one batch, k rows per failed problem, the caller's seed
    assert stats.greedy_pass == 0 and stats.samples == 8  # the tiny model writes random text greedily
    serving_prompt = build_messages(rescued.source, rescued.diagnostics, hints=True, output_format="program")
    # distinct passing replies: the second wording of the same program is not a second target
    assert targets[0] == [Target(serving_prompt, planted, "sampled")]
    assert parse_reply(targets[0][0].answer, rescued.source) == rescued.fixed
    (reference,) = targets[1]
    assert reference.kind == "reference"
    assert reference.messages == build_messages(
        unrescued.source, unrescued.diagnostics, hints=True, output_format="program"
    )
    sentence = cause_sentence(unrescued.diagnostics)
    assert reference.answer == sentence + "\n\n" + format_program_answer(unrescued.fixed)
    assert sentence.endswith(".") and "\n" not in sentence
    assert parse_reply(reference.answer, unrescued.source) == unrescued.fixed
    assert (stats.sampled_rescued, stats.sampled_targets, stats.reference_only) == (1, 1, 1)


def test_a_sampled_program_that_compiles_but_fails_the_tests_is_not_kept(tiny_runtime: ModelRuntime) -> None:
    sandbox = Sandbox(SandboxConfig())
    koan = next(k for k in train_koans() if k.tests.strip())
    problem = _problem(sandbox, koan)
    # a program that compiles but whose tests cannot pass: everything replaced by an empty main/lib
    empty = "fn main() {}\n" if koan.mode == "bin" else "pub fn unused() {}\n"
    assert sandbox.check(empty, koan.mode, koan.edition).ok

    def sample(prompts: list[list[dict[str, str]]], rows: list[int] | None, seed: int) -> list[Reply]:
        return [Reply("It compiles now.\n\n" + format_program_answer(empty))] * len(prompts)

    generate, _ = model_fns(tiny_runtime, GenerationParams(max_new_tokens=8), None)
    targets, stats = self_generated_targets([problem], sandbox, generate, sample, k=2, seed=0, hints=False)
    assert [t.kind for t in targets[0]] == ["reference"] and stats.sampled_targets == 0


def test_a_reply_that_deletes_an_original_test_never_becomes_a_training_target() -> None:
    """Training data obeys the fix loop's test-mode judge (agent.validation.judge_candidate): a greedy or
    sampled reply that compiles and passes what is left after deleting a test is not kept; an honest one is."""
    from tests.test_reliability_judge import BROKEN, FIXED, ONE_TEST_DELETED, TESTS_DELETED

    sandbox = Sandbox(SandboxConfig())
    result = sandbox.check(BROKEN, "test")
    assert not result.ok
    problem = SelfProblem(BROKEN, result.diagnostics, FIXED, "test", "2021", None)
    assert sandbox.verify(TESTS_DELETED, "test").ok  # the plain sandbox calls it fixed

    def generate(prompts: list[list[dict[str, str]]], keys: list[object] | None) -> list[Reply]:
        return [Reply("The tests were in the way.\n\n" + format_program_answer(TESTS_DELETED))] * len(prompts)

    def sample(prompts: list[list[dict[str, str]]], keys: list[object] | None, seed: int) -> list[Reply]:
        return [Reply("One test was wrong.\n\n" + format_program_answer(ONE_TEST_DELETED))] * len(prompts)

    targets, stats = self_generated_targets([problem], sandbox, generate, sample, k=2, seed=0, hints=False)
    assert [t.kind for t in targets[0]] == ["reference"]
    assert (stats.greedy_pass, stats.sampled_targets, stats.reference_only) == (0, 0, 1)

    def honest(prompts: list[list[dict[str, str]]], keys: list[object] | None) -> list[Reply]:
        return [Reply("The literal must be a number.\n\n" + format_program_answer(FIXED))] * len(prompts)

    targets, stats = self_generated_targets([problem], sandbox, honest, sample, k=2, seed=0, hints=False)
    assert [t.kind for t in targets[0]] == ["greedy"] and stats.greedy_pass == 1


def test_the_nights_samples_stop_at_their_prompts_length_and_its_greedy_replies_do_not(
    tiny_runtime: ModelRuntime,
) -> None:
    """The night's sampler (``night_model_fns``' cap, via ``model_fns``) stops each sample after as many new
    tokens as its prompt has; greedy replies, which the baseline and gate measure, keep serving's limit."""
    import math

    from service.night import NIGHT_SAMPLE_LENGTH_CAP

    koan = train_koans()[0]
    prompts = [build_messages(koan.broken, [], hints=False)]
    n_prompt = tiny_runtime.count_tokens(tiny_runtime.render(prompts[0]))
    limit = n_prompt + 40  # more than the cap allows, so the cap is what stops a long row
    generate, sample = model_fns(
        tiny_runtime, GenerationParams(max_new_tokens=limit), None, sample_length_cap=NIGHT_SAMPLE_LENGTH_CAP
    )
    drawn = sample(prompts * 4, None, 5)
    cap = math.ceil(NIGHT_SAMPLE_LENGTH_CAP * drawn[0].prompt_tokens)
    assert cap < limit and all(g.completion_tokens <= cap for g in drawn)
    assert any(g.stopped_by == "length" for g in drawn)  # the tiny model rambles: the cap cut it
    greedy = generate(prompts, None)[0]
    assert greedy.stopped_by == "length" and greedy.completion_tokens == limit > cap
