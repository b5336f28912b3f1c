"""Parsing rustc's diagnostics — JSON from our sandbox, rendered text from clients — on real compiler output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agent.diagnostics import (
    Diagnostic,
    error_codes,
    parse_client_output,
    parse_rendered,
    parse_rustc_json,
    signature,
)

TWO_ERRORS = """fn takes(s: &String) -> usize {
    s.len()
}

fn main() {
    let v = vec![1];
    v.pushh(2);
    let s = String::new();
    takes(s);
}
"""
WARNINGS_ONLY = 'fn main() {\n    let mut x = 1;\n    let unused = 3;\n    println!("{x}");\n}\n'


def _rustc(tmp_path: Path, source: str, error_format: str) -> str:
    """Real rustc output for ``source`` (trusted test input, so no jail needed here)."""
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "main.rs").write_text(source)
    argv = ["rustc", "--edition", "2021", f"--error-format={error_format}", "--emit=metadata"]
    argv += ["--crate-type", "bin", "-o", "out.rmeta", "src/main.rs"]
    return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=False).stderr


@pytest.fixture(scope="module")
def json_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _rustc(tmp_path_factory.mktemp("json"), TWO_ERRORS, "json")


@pytest.fixture(scope="module")
def warnings_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _rustc(tmp_path_factory.mktemp("warn"), WARNINGS_ONLY, "json")


@pytest.fixture(scope="module")
def human_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _rustc(tmp_path_factory.mktemp("human"), TWO_ERRORS, "human")


def test_json_gives_errors_and_no_summaries(json_output: str) -> None:
    diags = parse_rustc_json(json_output)
    errors = [d for d in diags if d.is_error]
    assert sorted((d.code, d.line, d.column) for d in errors) == [("E0308", 9, 11), ("E0599", 7, 7)]
    assert not any("aborting due to" in d.message or "rustc --explain" in d.message for d in diags)
    method = next(d for d in errors if d.code == "E0599")
    assert method.rendered.startswith("error[E0599]: no method named `pushh` found")
    assert "--> src/main.rs:7:7" in method.rendered


def test_warnings_keep_their_lint_name_and_are_not_error_codes(warnings_output: str) -> None:
    diags = parse_rustc_json(warnings_output)
    assert sorted(d.code or "" for d in diags) == ["unused_mut", "unused_variables"]
    assert all(d.level == "warning" for d in diags) and error_codes(diags) == []
    assert signature(diags) == ""


def test_json_suggestions_come_with_byte_spans(json_output: str, warnings_output: str) -> None:
    diags = parse_rustc_json(json_output)
    borrow = next(d for d in diags if d.code == "E0308").suggestions
    amp = next(s for s in borrow if s.replacement == "&")
    assert amp.applicability == "MachineApplicable"
    assert TWO_ERRORS.encode()[amp.byte_start : amp.byte_end + 1] == b"s"  # inserted before `s`
    assert (amp.line_start, amp.column_start) == (9, 11)
    assert amp.message == "consider borrowing here"
    warned = parse_rustc_json(warnings_output)
    underscore = next(d for d in warned if d.code == "unused_variables").suggestions[0]
    assert underscore.replacement == "_unused"


def test_non_json_lines_are_ignored(json_output: str) -> None:
    noisy = "thread 'main' panicked\n{not json\n" + json_output + "\n[1, 2]\n"
    assert parse_rustc_json(noisy) == parse_rustc_json(json_output)
    assert parse_rustc_json("") == []


def test_cargo_json_messages_are_unwrapped(json_output: str) -> None:
    cargo = "\n".join(
        json.dumps({"reason": "compiler-message", "package_id": "x 0.1.0", "message": json.loads(line)})
        for line in json_output.splitlines()
        if line.startswith("{")
    )
    cargo += '\n{"reason":"build-finished","success":false}\n'
    assert error_codes(parse_rustc_json(cargo)) == ["E0308", "E0599"]


def test_rendered_text_parses_like_json(json_output: str, human_output: str) -> None:
    from_text = parse_rendered(human_output)
    from_json = parse_rustc_json(json_output)
    assert [(d.level, d.code, d.message, d.line, d.column) for d in from_text] == [
        (d.level, d.code, d.message, d.line, d.column) for d in from_json
    ]
    assert from_text[0].rendered.strip() == from_json[0].rendered.strip()


def test_cargo_output_with_colours_and_progress() -> None:
    text = (
        "   Compiling demo v0.1.0 (/home/u/demo)\n"
        "\x1b[0m\x1b[1m\x1b[38;5;9merror[E0499]\x1b[0m\x1b[0m\x1b[1m: cannot borrow `v` as mutable more than once\x1b[0m\n"
        "\x1b[0m \x1b[0m\x1b[0m\x1b[1m\x1b[38;5;12m--> \x1b[0m\x1b[0msrc/lib.rs:5:14\x1b[0m\n"
        "  |\n5 |     let b = &mut v;\n  |             ^^^^^^ second mutable borrow occurs here\n\n"
        "error: could not compile `demo` (lib) due to 1 previous error\n"
    )
    [diag] = parse_client_output(text)
    assert (diag.level, diag.code, diag.line, diag.column) == ("error", "E0499", 5, 14)
    assert "Compiling" not in diag.rendered and "could not compile" not in diag.rendered
    assert diag.suggestions == ()


def test_short_format_and_uncoded_errors() -> None:
    text = "src/main.rs:3:5: error[E0425]: cannot find value `x` in this scope\nsrc/main.rs:9:1: error: unexpected closing delimiter: `}`\nerror: aborting due to 2 previous errors\n"
    diags = parse_client_output(text)
    assert [(d.code, d.line) for d in diags] == [("E0425", 3), (None, 9)]
    assert error_codes(diags) == ["E0425"]


def test_garbage_is_no_diagnostics() -> None:
    assert parse_client_output("hello\nworld\n") == []
    assert parse_client_output('{"level": 3}\n{"reason": "compiler-message", "message": 7}') == []


def test_error_codes_and_signature() -> None:
    diags = [
        Diagnostic("error", "E0502", "m", 9, 1, "r"),
        Diagnostic("warning", "unused_mut", "m", 2, 1, "r"),
        Diagnostic("error", "E0382", "m", 4, 1, "r"),
        Diagnostic("error", "E0382", "m", 7, 1, "r"),
        Diagnostic("error", None, "m", None, None, "r"),
    ]
    assert error_codes(diags) == ["E0382", "E0502"]
    sig = signature(diags)
    assert sig == signature(list(reversed(diags)))  # order-independent
    assert "unused_mut" not in sig and "E0382@4" in sig and "E0382@7" in sig
    moved = [Diagnostic("error", "E0382", "m", 5, 1, "r")]
    assert signature(moved) != signature(diags[2:3])  # same code, different line: different state


def test_diagnostics_round_trip_through_dicts(json_output: str) -> None:
    for diag in parse_rustc_json(json_output):
        data = json.loads(json.dumps(diag.to_dict()))
        assert Diagnostic.from_dict(data) == diag
