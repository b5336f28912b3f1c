"""rustfix-style suggestion applying, on real rustc suggestions from the sandbox."""

from __future__ import annotations

import pytest

from agent.diagnostics import Diagnostic, Suggestion
from agent.sandbox import Sandbox, SandboxConfig, Verdict
from agent.suggestions import apply_suggestions, apply_suggestions_counted, fix_with_suggestions


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(SandboxConfig())


def _edit(
    start: int, end: int, text: str, applicability: str = "MachineApplicable", group: int = 1
) -> Suggestion:
    return Suggestion("m", text, start, end, 1, start + 1, 1, end + 1, applicability, group)


def _diag(*suggestions: Suggestion) -> Diagnostic:
    return Diagnostic("error", "E0000", "m", 1, 1, "r", suggestions)


def test_unused_mut_is_removed(sandbox: Sandbox) -> None:
    source = 'fn main() {\n    let mut x = 1;\n    println!("{x}");\n}\n'
    result = sandbox.check(source)
    assert result.ok and [d.code for d in result.diagnostics] == ["unused_mut"]
    assert apply_suggestions(source, result.diagnostics) == source.replace("let mut x", "let x")


@pytest.mark.parametrize(
    ("broken", "fixed_fragment"),
    [
        # E0596: the help "consider changing this to be mutable"; the é checks UTF-8 byte offsets.
        (
            'fn main() {\n    let v = Vec::new();\n    v.push("é");\n    println!("{:?}", v);\n}\n',
            "let mut v",
        ),
        # E0308: "consider borrowing here" inserts a `&`.
        (
            'fn len(s: &String) -> usize {\n    s.len()\n}\nfn main() {\n    let s = String::from("ü");\n'
            '    println!("{}", len(s));\n}\n',
            "len(&s)",
        ),
        # E0384: assigning twice to an immutable binding.
        ('fn main() {\n    let x = 5;\n    x = 6;\n    println!("{x}");\n}\n', "let mut x = 5"),
    ],
    ids=["E0596", "E0308", "E0384"],
)
def test_machine_applicable_fixes_compile(sandbox: Sandbox, broken: str, fixed_fragment: str) -> None:
    outcome = fix_with_suggestions(sandbox, broken, "bin", "2021")
    assert outcome.result.ok, [d.rendered for d in outcome.result.errors]
    assert fixed_fragment in outcome.source
    assert outcome.rounds_used >= 1 and outcome.applied >= 1


def test_maybe_incorrect_only_when_asked(sandbox: Sandbox) -> None:
    typo = 'fn main() {\n    let count = 1;\n    println!("{}", coutn);\n}\n'
    safe = fix_with_suggestions(sandbox, typo, "bin", "2021")
    assert not safe.result.ok and safe.source == typo and safe.applied == 0 and safe.rounds_used == 0
    bold = fix_with_suggestions(sandbox, typo, "bin", "2021", include_maybe_incorrect=True)
    assert bold.result.ok and '"{}", count)' in bold.source


def test_identical_edits_from_two_diagnostics_apply_once(sandbox: Sandbox) -> None:
    source = 'fn main() {\n    let m: HashMap<u8, u8> = HashMap::new();\n    println!("{}", m.len());\n}\n'
    result = sandbox.check(source)
    assert result.error_codes == ["E0425", "E0433"]
    fixed = apply_suggestions(source, result.diagnostics, include_maybe_incorrect=True)
    assert fixed.count("use std::collections::HashMap;") == 1
    assert sandbox.check(fixed).ok


def test_nothing_applicable_means_no_progress(sandbox: Sandbox) -> None:
    source = 'fn main() {\n    let x: i32 = "text";\n}\n'
    outcome = fix_with_suggestions(sandbox, source, "bin", "2021", include_maybe_incorrect=True)
    assert outcome.source == source and outcome.rounds_used == 0
    assert outcome.result.verdict == Verdict.COMPILE_ERROR


def test_overlapping_edits_are_skipped() -> None:
    source = "abcdef"
    diags = [_diag(_edit(1, 3, "XY")), _diag(_edit(2, 4, "ZZ")), _diag(_edit(4, 4, "+"))]
    text, applied = apply_suggestions_counted(source, diags)
    assert text == "aXYd+ef" and applied == 2


def test_multi_part_suggestions_are_all_or_nothing() -> None:
    source = "let a = b;"
    blocked = _diag(_edit(4, 5, "A"))
    pair = _diag(_edit(4, 5, "x", group=2), _edit(8, 9, "y", group=2))
    assert apply_suggestions(source, [blocked, pair]) == "let A = b;"  # second part alone is never applied
    assert apply_suggestions(source, [pair]) == "let x = y;"


def test_applicability_filter() -> None:
    source = "abc"
    diags = [
        _diag(_edit(0, 1, "A", "MaybeIncorrect")),
        _diag(_edit(1, 2, "B", "HasPlaceholders")),
        _diag(_edit(2, 3, "C", "Unspecified")),
    ]
    assert apply_suggestions(source, diags) == "abc"
    assert apply_suggestions(source, diags, include_maybe_incorrect=True) == "Abc"


def test_byte_offsets_not_character_offsets() -> None:
    source = 'let s = "é"; let v = 1;'
    start = source.encode().index(b"v =")
    assert apply_suggestions(source, [_diag(_edit(start, start, "mut "))]) == 'let s = "é"; let mut v = 1;'


def test_spans_outside_the_source_are_ignored() -> None:
    assert apply_suggestions("abc", [_diag(_edit(2, 10, "x"))]) == "abc"
    # An offset inside a multi-byte character cannot belong to this source: nothing is applied.
    assert apply_suggestions("é", [_diag(_edit(1, 1, "x"))]) == "é"
