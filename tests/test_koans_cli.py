"""``dreamfix check`` and ``dreamfix koans ...`` as a user runs them (subprocesses), and the validation rules
behind ``koans validate`` on koans made to break each rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.koans import Koan, load_koans
from agent.sandbox import Sandbox, SandboxConfig
from agent.validation import rustfix_baseline, stub_functions, validate_koan
from service.cli import main
from service.settings import get_settings

GOOD_KOAN = """
[[koan]]
id = "demo-001"
title = "Vec moved into a helper, then used again"
split = "eval"
mode = "bin"
codes = ["E0382"]
broken = '''
fn total(v: Vec<i32>) -> i32 {
    v.iter().sum()
}
fn main() {
    let v = vec![1, 2, 3];
    let t = total(v);
    println!("{} {}", t, v.len());
}
'''
fixed = '''
fn total(v: &[i32]) -> i32 {
    v.iter().sum()
}
fn main() {
    let v = vec![1, 2, 3];
    let t = total(&v);
    println!("{} {}", t, v.len());
}
'''
tests = '''
#[test]
fn sums() { assert_eq!(total(&[1, 2, 3]), 6); }
'''
"""

BAD_CODES_KOAN = """
[[koan]]
id = "demo-002"
title = "declares the wrong code"
split = "train"
mode = "bin"
codes = ["E0499"]
broken = '''
fn main() {
    let x = 1;
    x = 2;
    println!("{x}");
}
'''
fixed = '''
fn main() {
    let mut x = 1;
    x = 2;
    println!("{x}");
}
'''
tests = '''
#[test]
fn nothing() {}
'''
"""


def _dreamfix(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """The real command in a fresh process (slow to start: keep these few)."""
    env = {**os.environ, "DREAMFIX_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "service", *args], capture_output=True, text=True, env=env, timeout=300
    )


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., Ran]]:
    """``dreamfix ARGS`` in this process, with its own data dir."""
    monkeypatch.setenv("DREAMFIX_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()

    def run(*args: str) -> Ran:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    yield run
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(SandboxConfig())


@pytest.mark.slow
def test_check_json_reports_the_diagnostics(tmp_path: Path) -> None:
    program = tmp_path / "moved.rs"
    program.write_text(
        'fn main() {\n    let v = vec![1];\n    let w = v;\n    println!("{:?} {:?}", v, w);\n}\n'
    )
    run = _dreamfix("check", str(program), "--json", data_dir=tmp_path)
    assert run.returncode == 1, run.stderr
    result = json.loads(run.stdout)
    assert result["ok"] is False and result["verdict"] == "compile_error"
    assert result["error_codes"] == ["E0382"]
    [diag] = result["diagnostics"]
    assert (diag["level"], diag["code"], diag["line"], diag["column"]) == ("error", "E0382", 4, 27)
    assert "src/main.rs:4:27" in diag["rendered"]
    assert diag["suggestions"][0]["replacement"] == ".clone()"
    assert result["duration_s"] > 0


def test_check_human_output_and_exit_codes(tmp_path: Path, cli: Callable[..., Ran]) -> None:
    good = tmp_path / "good.rs"
    good.write_text("pub fn f() -> u8 { 1 }\n")
    run = cli("check", str(good), "--mode", "lib")
    assert run.returncode == 0 and "verdict: ok" in run.stdout
    tested = tmp_path / "tested.rs"
    tested.write_text("pub fn f() -> u8 { 1 }\n#[test]\nfn one() { assert_eq!(f(), 2); }\n")
    run = cli("check", str(tested), "--mode", "test")
    assert run.returncode == 1 and "verdict: test_failed" in run.stdout and "left: 1" in run.stdout
    assert cli("check", str(tmp_path / "missing.rs")).returncode == 2
    assert cli("check", str(good), "--edition", "1999").returncode == 2
    binary = tmp_path / "binary.rs"
    binary.write_bytes(b"fn main() { \xff }")
    run = cli("check", str(binary), "--json")
    assert run.returncode == 1 and json.loads(run.stdout)["verdict"] == "invalid_input"


def test_koans_list_and_show(tmp_path: Path, cli: Callable[..., Ran]) -> None:
    library = tmp_path / "koans"
    library.mkdir()
    (library / "demo.toml").write_text(GOOD_KOAN + BAD_CODES_KOAN)
    run = cli("koans", "list", "--json", "--koans-dir", str(library))
    assert run.returncode == 0, run.stderr
    listed = json.loads(run.stdout)
    assert [k["id"] for k in listed] == ["demo-001", "demo-002"]
    assert listed[0] == {
        "id": "demo-001",
        "family": "demo",
        "split": "eval",
        "codes": ["E0382"],
        "mode": "bin",
        "edition": "2021",
        "title": "Vec moved into a helper, then used again",
    }
    run = cli("koans", "list", "--json", "--split", "train", "--koans-dir", str(library))
    assert [k["id"] for k in json.loads(run.stdout)] == ["demo-002"]
    run = cli("koans", "show", "demo-001", "--koans-dir", str(library))
    assert run.returncode == 0 and "fn total(v: &[i32])" in run.stdout
    assert cli("koans", "show", "nope-1", "--koans-dir", str(library)).returncode == 2
    run = cli("koans", "list", "--family", "nope", "--koans-dir", str(library))
    assert run.returncode == 2 and "families: demo" in run.stderr


def test_the_repository_library_loads_and_lists() -> None:
    koans = load_koans()
    if not koans:
        pytest.skip("no koans written yet")
    assert len({k.id for k in koans}) == len(koans)


def test_koans_validate_reports_per_family_and_fails_on_a_bad_koan(
    tmp_path: Path, cli: Callable[..., Ran]
) -> None:
    library = tmp_path / "koans"
    library.mkdir()
    (library / "demo.toml").write_text(GOOD_KOAN + BAD_CODES_KOAN)
    run = cli("koans", "validate", "--koans-dir", str(library))
    assert run.returncode == 1, run.stderr
    assert "demo" in run.stdout and "FAIL demo-002" in run.stdout
    assert "declared codes ['E0499'] but rustc reports ['E0384']" in run.stdout
    run = cli("koans", "validate", "--json", "--koans-dir", str(library))
    report = json.loads(run.stdout)
    assert report["ok"] is False
    assert report["families"] == [{"family": "demo", "train": 1, "eval": 1, "ok": 1, "failed": 1}]
    assert [k["ok"] for k in report["koans"]] == [True, False]


def _koan(**overrides: object) -> Koan:
    base: dict[str, object] = dict(
        id="t-001",
        family="t",
        title="t",
        split="train",
        mode="lib",
        edition="2021",
        codes=("E0277",),
        broken='pub fn double(x: u32) -> u32 {\n    x * "2"\n}\n',
        fixed="pub fn double(x: u32) -> u32 {\n    x * 2\n}\n",
        tests="#[test]\nfn doubles() { assert_eq!(double(21), 42); }\n",
    )
    base.update(overrides)
    return Koan(**base)  # type: ignore[arg-type]


@pytest.mark.slow
def test_validation_rules(sandbox: Sandbox) -> None:
    assert validate_koan(sandbox, _koan()).ok
    wrong_fix = validate_koan(sandbox, _koan(fixed="pub fn double(x: u32) -> u32 {\n    x + 2\n}\n"))
    assert not wrong_fix.ok and "the reference fix fails (test_failed)" in wrong_fix.problems[0]
    compiles = validate_koan(sandbox, _koan(broken=_koan().fixed + "// same\n"))
    assert any("broken program compiles" in p for p in compiles.problems)
    assert any("same program" in p for p in compiles.problems)
    weak = validate_koan(sandbox, _koan(tests="#[test]\nfn types() { let _f: fn(u32) -> u32 = double; }\n"))
    assert weak.problems == [
        "the tests still pass with every function body stubbed out: they pin no behaviour"
    ]


def test_stub_functions() -> None:
    source = (
        "// fn in a comment { }\n"
        "struct S { f: fn(u8) -> u8 }\n"
        "impl S {\n    fn get(&self) -> char { let c = '{'; c }\n}\n"
        "fn helper<'a>(s: &'a str) -> &'a str {\n    let _t = \"}\";\n    s\n}\n"
        "trait T { fn required(&self); }\n"
        "fn main() {\n    fn inner() {}\n}\n"
        "#[test]\nfn keeps_tests() { assert!(true); }\n"
    )
    stubbed = stub_functions(source)
    assert stubbed is not None
    assert "fn get(&self) -> char { unimplemented!() }" in stubbed
    assert "fn helper<'a>(s: &'a str) -> &'a str { unimplemented!() }" in stubbed
    assert "fn main() {\n    fn inner() {}\n}" in stubbed
    assert "fn keeps_tests() { assert!(true); }" in stubbed
    assert "// fn in a comment { }" in stubbed and "fn required(&self);" in stubbed
    assert stub_functions("fn main() {}\n") is None


@pytest.mark.slow
def test_rustfix_baseline_counts_fixes_per_family(sandbox: Sandbox) -> None:
    mut_koan = _koan(
        id="m-001",
        family="m",
        split="eval",
        mode="bin",
        codes=("E0596",),
        broken="fn fill(v: &mut Vec<u8>) { v.push(1); }\nfn main() {\n    let v = Vec::new();\n    fill(&mut v);\n}\n",
        fixed="fn fill(v: &mut Vec<u8>) { v.push(1); }\nfn main() {\n    let mut v = Vec::new();\n    fill(&mut v);\n}\n",
        tests="#[test]\nfn fills() { let mut v = Vec::new(); fill(&mut v); assert_eq!(v, [1]); }\n",
    )
    typo_koan = _koan(
        id="n-001",
        family="n",
        split="eval",
        mode="lib",
        codes=("E0425",),
        broken="pub fn area(width: u32, height: u32) -> u32 {\n    width * heigth\n}\n",
        fixed="pub fn area(width: u32, height: u32) -> u32 {\n    width * height\n}\n",
        tests="#[test]\nfn area_of() { assert_eq!(area(2, 3), 6); }\n",
    )
    rows = {r.family: r for r in rustfix_baseline(sandbox, [mut_koan, typo_koan, _koan(split="eval")])}
    assert (rows["m"].fixed_machine_applicable, rows["m"].fixed_with_maybe_incorrect) == (1, 1)
    assert (rows["n"].fixed_machine_applicable, rows["n"].fixed_with_maybe_incorrect) == (0, 1)
    assert rows["t"].fixed_with_maybe_incorrect == 0  # no suggestion turns `x * "2"` into `x * 2`
    assert rows["all"].koans == 3 and rows["all"].rate_with_maybe_incorrect == pytest.approx(2 / 3)
