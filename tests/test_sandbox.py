"""The sandbox's verdicts, caching and concurrency against the real rustc in the real jail."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agent.koans import compose_with_tests
from agent.sandbox import Job, Sandbox, SandboxConfig, SandboxUnavailable, Verdict

MOVED = 'fn main() {\n    let v = vec![1];\n    let w = v;\n    println!("{:?} {:?}", v, w);\n}\n'
GOOD = 'fn main() {\n    println!("{}", 1 + 1);\n}\n'
ADD_LIB = "pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n"
ADD_TESTS = "#[test]\nfn adds() {\n    assert_eq!(add(2, 3), 5);\n}\n"


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(SandboxConfig(wall_seconds=20, cpu_seconds=15))


def test_jail_is_active(sandbox: Sandbox) -> None:
    assert sandbox.jailed
    assert sandbox.rustc_version.startswith("rustc ")


def test_clean_program_is_ok(sandbox: Sandbox) -> None:
    result = sandbox.check(GOOD + "// clean\n")
    assert result.ok and result.verdict == Verdict.OK
    assert result.error_codes == []
    assert not result.cached


def test_compile_error_reports_codes_spans_and_repo_paths(sandbox: Sandbox) -> None:
    result = sandbox.check(MOVED)
    assert not result.ok and result.verdict == Verdict.COMPILE_ERROR
    assert result.error_codes == ["E0382"]
    error = result.errors[0]
    assert (error.line, error.column) == (4, 27)
    assert "--> src/main.rs:4:27" in error.rendered
    everything = "".join(d.rendered for d in result.diagnostics)
    assert "/tmp" not in everything and "dreamfix-sbx" not in everything


def test_lib_mode_shows_lib_rs_and_bin_mode_needs_main(sandbox: Sandbox) -> None:
    lib = sandbox.check("pub fn f() -> u8 { 300 }\n", mode="lib")
    assert lib.verdict == Verdict.COMPILE_ERROR
    assert "src/lib.rs" in lib.errors[0].rendered
    assert sandbox.check(ADD_LIB, mode="lib").ok
    no_main = sandbox.check(ADD_LIB, mode="bin")
    assert no_main.error_codes == ["E0601"]


def test_edition_matters(sandbox: Sandbox) -> None:
    source = 'fn main() {\n    let async = 1;\n    println!("{}", async);\n}\n'
    assert sandbox.check(source, edition="2015").ok
    assert sandbox.check(source, edition="2021").verdict == Verdict.COMPILE_ERROR


def test_test_mode_runs_the_program_tests(sandbox: Sandbox) -> None:
    passing = sandbox.check(ADD_LIB + ADD_TESTS, mode="test")
    assert passing.ok, passing.output
    assert "1 passed" in passing.output
    failing = sandbox.check(ADD_LIB.replace("a + b", "a - b") + ADD_TESTS, mode="test")
    assert failing.verdict == Verdict.TEST_FAILED
    assert "left: -1" in failing.output and "right: 5" in failing.output
    assert "src/lib.rs" in failing.output


def test_verify_requires_compile_and_tests(sandbox: Sandbox) -> None:
    assert sandbox.verify(ADD_LIB, "lib", "2021", ADD_TESTS).ok
    wrong = sandbox.verify(ADD_LIB.replace("a + b", "a * b"), "lib", "2021", ADD_TESTS)
    assert wrong.verdict == Verdict.TEST_FAILED and "panicked" in wrong.output
    # A "fix" that renames the function compiles alone but not with the tests.
    renamed = sandbox.verify(ADD_LIB.replace("add", "plus"), "lib", "2021", ADD_TESTS)
    assert renamed.verdict == Verdict.TEST_FAILED
    assert renamed.diagnostics == [] and "E0425" in renamed.output
    # A broken program reports its own compile errors, not the composed file's.
    broken = sandbox.verify(MOVED, "bin", "2021", "#[test]\nfn t() {}\n")
    assert broken.verdict == Verdict.COMPILE_ERROR and broken.error_codes == ["E0382"]


def test_bin_programs_are_tested_with_their_main(sandbox: Sandbox) -> None:
    source = 'fn double(x: u32) -> u32 {\n    x * 2\n}\nfn main() {\n    println!("{}", double(4));\n}\n'
    assert sandbox.verify(source, "bin", "2021", "#[test]\nfn d() { assert_eq!(double(4), 8); }\n").ok
    # What the judge compiles is exactly compose_with_tests' program.
    assert "mod __koan_tests" in compose_with_tests(source, "#[test]\nfn d() {}\n")


@pytest.mark.parametrize(
    ("source", "mode", "edition", "expected"),
    [
        (b'fn main() { let s = "\xff\xfe"; }', "bin", "2021", "not valid UTF-8"),
        ("", "bin", "2021", "empty"),
        ("   \n\t\n", "bin", "2021", "empty"),
        (GOOD, "bin", "2077", "unknown edition"),
        (GOOD, "dylib", "2021", "unknown mode"),
    ],
)
def test_bad_input_is_invalid_input(
    sandbox: Sandbox, source: str | bytes, mode: str, edition: str, expected: str
) -> None:
    result = sandbox.check(source, mode=mode, edition=edition)
    assert result.verdict == Verdict.INVALID_INPUT and not result.ok
    assert expected in result.message


def test_huge_source_is_refused_without_running_rustc(sandbox: Sandbox) -> None:
    source = "fn main() {}\n" + "// padding\n" * (10 * 1024 * 1024 // 11)
    start = time.perf_counter()
    result = sandbox.check(source)
    assert result.verdict == Verdict.INVALID_INPUT
    assert "limit" in result.message
    assert time.perf_counter() - start < 0.5


def test_results_are_cached_in_memory_and_on_disk(tmp_path: Path) -> None:
    config = SandboxConfig(cache_dir=tmp_path / "cache")
    first = Sandbox(config)
    fresh = first.check(MOVED + "// cache\n")
    again = first.check(MOVED + "// cache\n")
    assert not fresh.cached and again.cached
    assert again.error_codes == fresh.error_codes == ["E0382"]
    assert again.diagnostics == fresh.diagnostics
    assert again.duration_s < fresh.duration_s / 10
    # A new process (here: a new Sandbox) finds it on disk.
    second = Sandbox(config)
    from_disk = second.check(MOVED + "// cache\n")
    assert from_disk.cached and from_disk.diagnostics == fresh.diagnostics
    assert list((tmp_path / "cache").glob("*/*.json"))
    # Anything that could change the verdict is part of the key.
    assert not second.check(MOVED + "// cache\n", edition="2018").cached
    assert not second.verify(MOVED + "// cache\n", "bin", "2021", "#[test]\nfn t() {}\n").cached
    tighter = Sandbox(replace(config, memory_mb=1024))
    assert not tighter.check(MOVED + "// cache\n").cached


def test_memory_cache_is_bounded() -> None:
    small = Sandbox(SandboxConfig(cache_entries=2))
    for i in range(3):
        small.check(f"fn main() {{ let _x = {i}; }}\n")
    assert not small.check("fn main() { let _x = 0; }\n").cached  # evicted first
    assert small.check("fn main() { let _x = 2; }\n").cached


def test_many_checks_at_once_keep_order_and_answers(tmp_path: Path) -> None:
    sandbox = Sandbox(SandboxConfig(max_concurrency=4, cache_entries=0, work_root=tmp_path))
    programs = []
    for i in range(12):
        if i % 3 == 0:
            programs.append(Job(f'fn main() {{ let x: u8 = {i}; println!("{{x}}"); }}\n'))
        elif i % 3 == 1:
            programs.append(Job(f'fn main() {{ let x: u8 = "{i}"; }}\n'))
        else:
            programs.append(Job(f"pub fn f{i}() -> u8 {{ {i} }}\n", mode="lib"))
    results = sandbox.check_many(programs)
    assert [r.error_codes for r in results] == [[] if i % 3 != 1 else ["E0308"] for i in range(12)]
    assert [r.ok for r in results] == [i % 3 != 1 for i in range(12)]
    verified = sandbox.verify_many(
        [Job(ADD_LIB, "lib", "2021", ADD_TESTS), Job(ADD_LIB.replace("+", "-"), "lib", "2021", ADD_TESTS)]
    )
    assert [r.verdict for r in verified] == [Verdict.OK, Verdict.TEST_FAILED]
    assert list(tmp_path.iterdir()) == []  # every work dir is removed


def test_without_a_jail_untrusted_code_is_refused_unless_allowed(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SandboxUnavailable, match="refusing to run untrusted code"):
        Sandbox(SandboxConfig(jail="none"))
    with caplog.at_level(logging.WARNING, logger="agent.sandbox"):
        unjailed = Sandbox(SandboxConfig(jail="none", allow_unjailed=True))
    assert "NOT JAILED" in caplog.text
    assert not unjailed.jailed
    assert unjailed.check(MOVED).error_codes == ["E0382"]
    assert unjailed.verify(ADD_LIB, "lib", "2021", ADD_TESTS).ok
    with pytest.raises(ValueError, match="jail"):
        Sandbox(SandboxConfig(jail="docker"))


def test_a_memory_limit_too_small_for_rustc_is_refused_up_front() -> None:
    # Below ~450 MB of address space rustc cannot map std's metadata and reports nonsense errors;
    # that must surface as a configuration error, not as compile errors in every program.
    with pytest.raises(SandboxUnavailable, match="memory_mb=300"):
        Sandbox(SandboxConfig(memory_mb=300))


def test_result_serialises(sandbox: Sandbox) -> None:
    data = sandbox.check(MOVED).to_dict()
    assert data["verdict"] == "compile_error" and data["error_codes"] == ["E0382"]
    diag = data["diagnostics"][0]
    assert {"level", "code", "message", "rendered", "line", "column", "suggestions"} <= set(diag)
