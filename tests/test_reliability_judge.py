"""Issue 17: in test mode a fix is only a fix if every original #[test] still exists, runs and passes, and
no todo!()/unimplemented!() was added — judged by the real sandbox, inside the loop and on its own."""

from __future__ import annotations

import pytest

from agent.loop import FixLoop, Problem, Strategy
from agent.prompt import format_program_answer
from agent.sandbox import Sandbox, SandboxConfig
from agent.validation import judge_candidate, original_test_names, placeholder_count
from tests.test_loop import Scripted, _route

BROKEN = """\
pub fn double(x: i32) -> i32 {
    let factor: i32 = "2";
    x * factor
}

pub fn triple(x: i32) -> i32 {
    x * 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles() {
        assert_eq!(double(4), 8);
    }

    #[test]
    fn triples() {
        assert_eq!(triple(2), 6);
    }
}
"""
FIXED = BROKEN.replace('"2"', "2")
# What a model did to a client: dropped the tests, so "whatever remains" passes vacuously.
TESTS_DELETED = FIXED[: FIXED.index("#[cfg(test)]")]
ONE_TEST_DELETED = FIXED.replace(
    "    #[test]\n    fn triples() {\n        assert_eq!(triple(2), 6);\n    }\n", ""
)
RENAMED = FIXED.replace("fn triples()", "fn triples_again()")
STUBBED = FIXED.replace("    x * 3\n", "    unimplemented!()\n").replace(
    "assert_eq!(triple(2), 6);", "let _ = triple;"
)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    return Sandbox(SandboxConfig(cache_dir=tmp_path_factory.mktemp("judge-cache")))


def test_names_and_placeholders_ignore_comments_and_strings() -> None:
    src = '// #[test] fn ghost() {}\n#[test]\n#[should_panic]\nfn real() { let _ = "todo!()"; }\n'
    assert original_test_names(src) == ["real"]
    assert placeholder_count(src) == 0
    assert original_test_names(FIXED) == ["doubles", "triples"]
    assert placeholder_count(STUBBED) == 1


def test_the_honest_fix_passes(sandbox: Sandbox) -> None:
    result = judge_candidate(sandbox, BROKEN, FIXED, "test")
    assert result.ok, result.message


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (TESTS_DELETED, "removed the original tests doubles, triples"),
        (ONE_TEST_DELETED, "removed the original tests triples"),
        (RENAMED, "removed the original tests triples"),
        (STUBBED, "added 1 todo!()/unimplemented!()"),
    ],
)
def test_a_fix_that_guts_the_tests_fails(sandbox: Sandbox, candidate: str, reason: str) -> None:
    assert sandbox.verify(candidate, "test").ok  # the plain judge on main calls these fixed
    result = judge_candidate(sandbox, BROKEN, candidate, "test")
    assert not result.ok and reason in result.message, result.message
    assert result.verdict.value == "test_failed"


def test_the_loop_does_not_call_a_test_deleting_reply_fixed(sandbox: Sandbox) -> None:
    loop = FixLoop(sandbox, Scripted(lambda program, _: format_program_answer(TESTS_DELETED)), _route(), "m")
    (record,) = loop.run([Problem("dbl", BROKEN, "test", "2021")], Strategy("loop", max_attempts=1))
    assert not record.fixed
    honest = FixLoop(sandbox, Scripted(lambda program, _: format_program_answer(FIXED)), _route(), "m")
    (good,) = honest.run([Problem("dbl", BROKEN, "test", "2021")], Strategy("loop", max_attempts=1))
    assert good.fixed
