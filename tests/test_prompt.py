"""The one prompt builder: what the model sees, and that every training answer parses back to its fix."""

from __future__ import annotations

import pytest

from agent.diagnostics import Diagnostic, parse_rendered
from agent.koans import load_koans
from agent.prompt import (
    MAX_DIAGNOSTICS,
    Feedback,
    OutputFormat,
    apply_edits,
    build_messages,
    clean_diagnostics,
    format_edits_answer,
    normalize_paths,
    parse_reply,
    prompt_hash,
    training_example,
)

CLIENT_OUTPUT = """\
   Compiling shop v0.1.0 (/home/alice/projects/shop)
error[E0382]: borrow of moved value: `n`
 --> /home/alice/projects/shop/src/main.rs:5:20
  |
4 |     let a = greet(n);
  |                   - value moved here
5 |     println!("{a} {n}");
  |                    ^ value borrowed here after move

error[E0382]: borrow of moved value: `n`
 --> /home/alice/projects/shop/src/main.rs:5:20
  |
5 |     println!("{a} {n}");
  |                    ^ value borrowed here after move

error: aborting due to 1 previous error

For more information about this error, try `rustc --explain E0382`.
error: could not compile `shop` (bin "shop") due to 1 previous error
"""

BROKEN = """\
fn greet(name: String) -> String { format!("hi {name}") }
fn main() {
    let n = String::from("bo");
    let a = greet(n);
    println!("{a} {n}");
}
"""
FIXED = BROKEN.replace("name: String", "name: &str").replace("greet(n)", "greet(&n)")


def _user(messages: list[dict[str, str]]) -> str:
    assert [m["role"] for m in messages] == ["system", "user"]
    return messages[1]["content"]


def test_prompt_shows_the_program_and_cleaned_diagnostics() -> None:
    diagnostics = parse_rendered(CLIENT_OUTPUT)
    user = _user(build_messages(BROKEN, diagnostics, hints=False, output_format="program"))
    assert BROKEN.strip() in user
    assert user.count("borrow of moved value") == 1  # the duplicate is collapsed
    assert "src/main.rs:5:20" in user and "/home/alice" not in user
    assert "aborting due to" not in user and "rustc --explain" not in user and "could not compile" not in user
    assert "```rust" in user and "Hints" not in user


def test_hints_are_error_specific_and_only_when_asked() -> None:
    diagnostics = parse_rendered(CLIENT_OUTPUT)
    with_hints = _user(build_messages(BROKEN, diagnostics, hints=True))
    assert "E0382: Use after move" in with_hints
    assert "E0502" not in with_hints
    assert prompt_hash(build_messages(BROKEN, diagnostics, hints=True)) != prompt_hash(
        build_messages(BROKEN, diagnostics, hints=False)
    )


def test_output_format_instructions_differ_and_bad_format_is_rejected() -> None:
    program = _user(build_messages(BROKEN, [], hints=False, output_format="program"))
    edits = _user(build_messages(BROKEN, [], hints=False, output_format="edits"))
    assert "complete corrected program" in program and "SEARCH" not in program
    assert "<<<<<<< SEARCH" in edits and ">>>>>>> REPLACE" in edits
    with pytest.raises(ValueError, match="output_format"):
        build_messages(BROKEN, [], hints=False, output_format="diff")  # type: ignore[arg-type]


def test_many_errors_are_capped() -> None:
    many = [
        Diagnostic(
            "error", "E0425", f"cannot find value `v{i}` in this scope", i + 1, 5, f"error[E0425]: v{i}"
        )
        for i in range(20)
    ]
    text = clean_diagnostics(many)
    assert text.count("error[E0425]") == MAX_DIAGNOSTICS
    assert f"... and {20 - MAX_DIAGNOSTICS} more error(s)" in text
    huge = [Diagnostic("error", "E0308", "mismatched types", 1, 1, "error[E0308]: x\n" + "  | line\n" * 500)]
    assert len(clean_diagnostics(huge).splitlines()) < 40


def test_feedback_shows_what_the_last_attempt_changed_and_what_broke() -> None:
    candidate = BROKEN.replace("let a = greet(n);", "let a = greet(n.clone());")
    after = [Diagnostic("error", "E0308", "mismatched types", 4, 19, "error[E0308]: mismatched types")]
    feedback = Feedback("its change caused other errors", candidate, after, "")
    user = _user(build_messages(BROKEN, [], hints=False, feedback=feedback))
    assert "A previous attempt failed: its change caused other errors." in user
    assert "+    let a = greet(n.clone());" in user
    assert "error[E0308]: mismatched types" in user
    tests_failed = Feedback(
        "it compiled but changed what the program does", candidate, (), "assertion failed"
    )
    assert "tests failed:\n```text\nassertion failed" in _user(
        build_messages(BROKEN, [], hints=False, feedback=tests_failed)
    )


def test_normalize_paths() -> None:
    assert normalize_paths(" --> /tmp/x1/src/lib.rs:3:4") == " --> src/lib.rs:3:4"
    assert normalize_paths(" --> /tmp/build/main.rs:1:2") == " --> main.rs:1:2"
    assert normalize_paths(r" --> C:\Users\bo\p\src\main.rs:1:2") == " --> src/main.rs:1:2"


@pytest.mark.parametrize("output_format", ["program", "edits"])
def test_training_answers_parse_back_to_the_reference_fix_for_every_koan(output_format: OutputFormat) -> None:
    for koan in load_koans():
        messages, answer = training_example(
            koan.broken, [], koan.fixed, hints=True, output_format=output_format
        )
        assert messages == build_messages(koan.broken, [], hints=True, output_format=output_format)
        parsed = parse_reply(answer, koan.broken, output_format)
        assert parsed is not None and parsed.strip() == koan.fixed.strip(), koan.id


def test_edits_answers_are_shorter_than_whole_programs() -> None:
    koans = load_koans()
    edits = sum(len(format_edits_answer(k.broken, k.fixed)) for k in koans)
    programs = sum(len(training_example(k.broken, [], k.fixed, hints=False)[1]) for k in koans)
    assert edits < 0.8 * programs
    assert apply_edits(BROKEN, format_edits_answer(BROKEN, FIXED)) == FIXED


def test_parse_reply_finds_the_program_in_prose_fences_and_bare_code() -> None:
    assert parse_reply(f"Here is the fix:\n```rust\n{FIXED}```\nIt borrows now.", BROKEN) == FIXED
    assert parse_reply(f"```\n{FIXED}```", BROKEN) == FIXED
    assert parse_reply(f"Sure.\n\n{FIXED}\nThis compiles because greet borrows.", BROKEN) == FIXED
    # An unterminated fence (the reply hit max_new_tokens after the code) still yields the code.
    assert parse_reply(f"```rust\n{FIXED}", BROKEN) == FIXED
    assert parse_reply("I cannot help with that.", BROKEN) is None
    assert parse_reply("", BROKEN) is None


def test_parse_reply_picks_the_whole_program_among_several_blocks() -> None:
    reply = (
        "The problem is here:\n```rust\nlet a = greet(n);\n```\n"
        f"Fixed program:\n```rust\n{FIXED}```\nYou can run it with:\n```sh\ncargo run\n```\n"
    )
    assert parse_reply(reply, BROKEN) == FIXED


def test_parse_reply_applies_edit_blocks_tolerating_indentation() -> None:
    reply = (
        # The model dropped the indentation on both sides: the replacement is re-indented to fit.
        "Change the call:\n<<<<<<< SEARCH\nlet a = greet(n);\n=======\nlet a = greet(&n);\n>>>>>>> REPLACE\n"
        'and the signature:\n<<<<<<< SEARCH\nfn greet(name: String) -> String { format!("hi {name}") }\n=======\n'
        'fn greet(name: &str) -> String { format!("hi {name}") }\n>>>>>>> REPLACE\n'
    )
    assert parse_reply(reply, BROKEN, "edits") == FIXED
    # Edits are honoured even when a whole program was asked for, and a program when edits were.
    assert parse_reply(reply, BROKEN, "program") == FIXED
    assert parse_reply(f"```rust\n{FIXED}```", BROKEN, "edits") == FIXED


def test_edit_blocks_that_match_nothing_give_no_candidate() -> None:
    reply = "<<<<<<< SEARCH\nlet zzz = 1;\n=======\nlet zzz = 2;\n>>>>>>> REPLACE\n"
    assert parse_reply(reply, BROKEN, "edits") is None
