"""The jail: untrusted code learns nothing about the host, and every kind of runaway ends in a clear verdict
within its limit, leaving no process and no work dir behind."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sandbox import WORKDIR_PREFIX, Sandbox, SandboxConfig, Verdict


def _alive(sandbox: Sandbox) -> list[int]:
    """Pids of live processes running under one of the uids this sandbox gave its runs."""
    uids = set(sandbox.recent_uids)
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("Uid:"):
                    if int(line.split()[1]) in uids:
                        found.append(int(status.parent.name))
                    break
        except (OSError, ValueError):
            continue
    return found


@pytest.fixture(scope="module")
def work_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sandbox-work")


@pytest.fixture(scope="module")
def sandbox(work_root: Path) -> Sandbox:
    return Sandbox(SandboxConfig(cache_entries=0, work_root=work_root))


@pytest.fixture(scope="module")
def strict(work_root: Path) -> Iterator[Sandbox]:
    """Tight limits so that runaways end fast; afterwards nothing of theirs may be left."""
    yield Sandbox(
        SandboxConfig(
            cache_entries=0,
            work_root=work_root,
            cpu_seconds=2,
            wall_seconds=4,
            memory_mb=512,
            max_processes=16,
            max_output_bytes=64 * 1024,
            max_file_bytes=8 * 1024 * 1024,
        )
    )
    assert list(work_root.iterdir()) == [], "work dirs left behind"


def _all_text(result: object) -> str:
    data = result.to_dict()  # type: ignore[attr-defined]
    return repr(data)


# ------------------------------------------------------------------------------------ nothing leaks


def test_host_files_are_invisible_to_the_compiler(sandbox: Sandbox, tmp_path: Path) -> None:
    marker = f"host-secret-{secrets.token_hex(8)}"
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(marker)
    secret_file.chmod(0o644)
    result = sandbox.check(f'compile_error!(include_str!("{secret_file}"));\nfn main() {{}}\n')
    assert result.verdict == Verdict.COMPILE_ERROR
    assert marker not in _all_text(result)
    assert "couldn't read" in result.errors[0].message

    hostname = Path("/etc/hostname").read_text().strip() or socket.gethostname()
    result = sandbox.check('compile_error!(include_str!("/etc/hostname"));\nfn main() {}\n')
    assert result.verdict == Verdict.COMPILE_ERROR
    assert "couldn't read `/etc/hostname`" in result.errors[0].message
    assert all(d.message != hostname for d in result.diagnostics)


def test_os_release_is_invisible(sandbox: Sandbox) -> None:
    host_release = Path("/etc/os-release").read_text()
    pretty = next(line for line in host_release.splitlines() if line.startswith(("PRETTY_NAME", "NAME")))
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        result = sandbox.check(f'#[path = "{path}"]\nmod m;\nfn main() {{}}\n')
        assert result.verdict == Verdict.COMPILE_ERROR
        assert pretty not in _all_text(result)
        assert pretty.split("=", 1)[1].strip('"') not in _all_text(result)


def test_parent_environment_is_invisible(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    token = f"tok-{secrets.token_hex(12)}"
    monkeypatch.setenv("DREAMFIX_ADMIN_TOKEN", token)
    result = sandbox.check('compile_error!(env!("DREAMFIX_ADMIN_TOKEN"));\nfn main() {}\n')
    assert result.verdict == Verdict.COMPILE_ERROR
    assert token not in _all_text(result)
    assert "not defined at compile time" in result.errors[0].message
    # ... nor to the test binary.
    probe = (
        "#[test]\nfn env() {\n"
        '    let all: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();\n'
        '    panic!("ENV {:?}", all);\n}\n'
    )
    ran = sandbox.check(probe, mode="test")
    assert ran.verdict == Verdict.TEST_FAILED and "ENV [" in ran.output
    assert token not in ran.output and "DREAMFIX" not in ran.output


@pytest.mark.slow
def test_test_binary_sees_only_the_jail(sandbox: Sandbox) -> None:
    probe = (
        "#[test]\nfn look() {\n"
        '    let root: Vec<_> = std::fs::read_dir("/").unwrap().map(|e| e.unwrap().file_name()).collect();\n'
        '    let net = std::net::TcpStream::connect("127.0.0.1:5432").is_ok()\n'
        '        || std::net::TcpStream::connect("1.1.1.1:53").is_ok();\n'
        '    let home = std::fs::read_dir("/root").is_ok() || std::fs::read_dir("/home").is_ok();\n'
        '    let etc = std::fs::read_to_string("/etc/passwd").is_ok();\n'
        '    std::fs::write("/tmp/mine", b"").unwrap();\n'
        '    let uid = format!("Uid:{}", std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/tmp/mine").unwrap()));\n'
        '    let writable = std::fs::write("/work/x", b"x").is_ok() || std::fs::write("/usr/x", b"x").is_ok();\n'
        '    panic!("ROOT {:?} NET {} HOME {} ETC {} {} WRITE {}", root, net, home, etc, uid, writable);\n}\n'
    )
    out = sandbox.check(probe, mode="test").output
    assert "NET false HOME false ETC false" in out, out
    assert "WRITE false" in out
    listed = out.split("ROOT [", 1)[1].split("]", 1)[0]
    assert sorted(x.strip().strip('"') for x in listed.split(",")) == [
        "dev", "lib", "lib64", "opt", "proc", "tmp", "usr", "work"
    ]  # fmt: skip
    assert "Uid:0 " not in out and "Uid:" in out


def test_no_host_paths_or_other_command_lines_through_proc(sandbox: Sandbox, work_root: Path) -> None:
    """The program under test reads the mount table and every process's command line it can find, and the
    compiler is asked to embed the jail's init's command line: none of it names a host path."""
    leaks = (str(work_root), "dreamfix-sbx-", ".rustup", "bwrap", "--ro-bind")
    run_probe = (
        f"// {secrets.token_hex(8)}\n"
        "#[test]\nfn look() {\n"
        '    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();\n'
        "    let mut cmds = String::new();\n"
        "    for pid in 1..64 {\n"
        '        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) {\n'
        "            cmds.push_str(&String::from_utf8_lossy(&c));\n"
        "        }\n"
        "    }\n"
        '    panic!("MOUNTS<<{mi}>> CMDS<<{cmds}>>");\n}\n'
    )
    out = sandbox.check(run_probe, mode="test").output
    assert "MOUNTS<<>> CMDS<<>>" in out, out
    compile_probe = (
        f"// {secrets.token_hex(8)}\n"
        'const INIT: &str = include_str!("/proc/1/cmdline");\n'
        '#[test]\nfn look() {\n    panic!("INIT<<{INIT}>>");\n}\n'
    )
    result = sandbox.check(compile_probe, mode="test")
    seen = result.output + " ".join(d.message for d in result.diagnostics) + (result.message or "")
    assert not [leak for leak in leaks if leak in seen], seen


_PROC_LEAKS = (
    "/proc/self/mountinfo",
    "/proc/self/mounts",
    "/proc/1/mountinfo",
    "/proc/1/cmdline",
    "/proc/self/environ",
    "/proc/self/cmdline",
    "/proc/self/exe",
)


def test_the_compiler_cannot_embed_procfs(sandbox: Sandbox, work_root: Path) -> None:
    """``include_str!``/``include_bytes!`` of the compiler's own (or its jail's init's) mount table, command
    line and environment: each is unreadable, so no host path reaches a diagnostic or a test binary."""
    leaks = (str(work_root), str(sandbox.sysroot), ".rustup", WORKDIR_PREFIX, "/newroot", "bwrap")
    shown = "".join(
        f'const _S{i}: &str = compile_error!(include_str!("{p}"));\n' for i, p in enumerate(_PROC_LEAKS)
    )
    result = sandbox.check(f"// {secrets.token_hex(8)}\n{shown}fn main() {{}}\n")
    assert result.verdict == Verdict.COMPILE_ERROR
    unread = [d.message for d in result.errors if d.message.startswith("couldn't read")]
    assert len(unread) == len(_PROC_LEAKS), [d.message for d in result.errors]
    assert not [leak for leak in leaks if leak in _all_text(result)], _all_text(result)

    embedded = "".join(f'const B{i}: &[u8] = include_bytes!("{p}");\n' for i, p in enumerate(_PROC_LEAKS))
    dump = " ".join(f"String::from_utf8_lossy(B{i})," for i in range(len(_PROC_LEAKS)))
    probe = f'// {secrets.token_hex(8)}\n{embedded}#[test]\nfn look() {{ panic!("{{:?}}", [{dump}]); }}\n'
    result = sandbox.check(probe, mode="test")
    assert result.verdict == Verdict.COMPILE_ERROR, result.output
    assert not [leak for leak in leaks if leak in _all_text(result)], _all_text(result)


# ---------------------------------------------------------------------------------------- runaways


@pytest.mark.slow
def test_rustc_that_never_finishes_is_stopped(strict: Sandbox) -> None:
    source = (
        "#![allow(long_running_const_eval)]\n"
        "const X: u64 = { let mut i = 1u64; while i != 0 { i = i.wrapping_mul(3); } i };\n"
        'fn main() { println!("{}", X); }\n'
    )
    result = strict.check(source)
    assert result.verdict == Verdict.TIMEOUT, result.message
    assert result.duration_s < strict.config.wall_seconds + 3
    assert _alive(strict) == []


@pytest.mark.slow
def test_rustc_that_eats_memory_is_stopped(work_root: Path) -> None:
    # Generous time limits, so that under load the memory limit is what stops it.
    strict = Sandbox(SandboxConfig(cache_entries=0, work_root=work_root, memory_mb=512, wall_seconds=60))
    # Exponential macro expansion: 2^22 token trees.
    source = (
        "macro_rules! d { () => {0}; (x $($r:tt)*) => { d!($($r)*) + d!($($r)*) }; }\n"
        'fn main() { let n: u64 = d!(x x x x x x x x x x x x x x x x x x x x x x); println!("{}", n); }\n'
    )
    result = strict.check(source)
    assert result.verdict == Verdict.MEMORY_LIMIT, result.message
    # A huge constant is refused by rustc itself once the allocation fails under the limit.
    big = strict.check('static A: [u8; 1 << 31] = [1; 1 << 31];\nfn main() { println!("{}", A[5]); }\n')
    assert big.verdict == Verdict.COMPILE_ERROR and big.error_codes == ["E0080"]
    assert _alive(strict) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "body", "verdicts"),
    [
        (
            "spin",
            "let mut x = 0u64; loop { x = std::hint::black_box(x.wrapping_add(1)); }",
            {Verdict.TIMEOUT},
        ),
        ("sleep", "std::thread::sleep(std::time::Duration::from_secs(3600));", {Verdict.TIMEOUT}),
        (
            "flood",
            'use std::io::Write; let mut out = std::io::stdout(); loop { out.write_all(b"spam spam spam\\n").ok(); }',
            {Verdict.OUTPUT_LIMIT},
        ),
        # Reserved, not filled: the address-space limit is what ends it, after ~8 blocks and no CPU to speak
        # of. (Filling 512 MB page by page took over the 2 s CPU limit on a loaded CI host: TIMEOUT.)
        (
            "alloc",
            "let mut v = Vec::new();\n"
            "    loop { let mut b = Vec::<u8>::with_capacity(64 << 20); b.push(1); v.push(b); }",
            {Verdict.MEMORY_LIMIT},
        ),
        (
            "big_file",
            'std::fs::write("/tmp/big", vec![7u8; 64 << 20]).unwrap();',
            {Verdict.TEST_FAILED, Verdict.OUTPUT_LIMIT},
        ),
        (
            "fork_bomb",
            "let me = std::env::current_exe().unwrap(); let mut kids = Vec::new();\n"
            "    loop { if let Ok(c) = std::process::Command::new(&me).spawn() { kids.push(c); } }",
            {Verdict.TIMEOUT, Verdict.TEST_FAILED},
        ),
    ],
    ids=["spin", "sleep", "stdout_flood", "alloc", "big_file", "fork_bomb"],
)
def test_runaway_test_binaries_end_in_a_clear_verdict(
    strict: Sandbox, name: str, body: str, verdicts: set[Verdict]
) -> None:
    result = strict.check(f"#[test]\nfn {name}() {{\n    {body}\n}}\n", mode="test")
    assert result.verdict in verdicts, (result.verdict, result.message, result.output[-500:])
    assert not result.ok and result.message
    # compile (bounded by the wall limit) + run (bounded by the wall limit)
    assert result.duration_s < 2 * strict.config.wall_seconds + 4
    assert len(result.output) <= strict.config.max_output_bytes
    assert _alive(strict) == []


@pytest.mark.slow
def test_fork_bomb_is_held_by_the_process_limit(strict: Sandbox) -> None:
    """Root is exempt from RLIMIT_NPROC; the jail's own uid is not, so spawning stops at the limit."""
    source = (
        "#[test]\nfn count() {\n    let mut kids = Vec::new();\n    let mut refused = false;\n"
        "    for _ in 0..200 {\n"
        '        match std::process::Command::new("/work/test-bin").arg("--list").spawn() {\n'
        "            Ok(c) => kids.push(c),\n            Err(_) => { refused = true; break; }\n        }\n    }\n"
        '    panic!("SPAWNED {} REFUSED {}", kids.len(), refused);\n}\n'
    )
    result = strict.check(source, mode="test")
    assert "REFUSED true" in result.output, result.output[-800:]
    spawned = int(result.output.split("SPAWNED ", 1)[1].split()[0])
    assert spawned < strict.config.max_processes
    assert _alive(strict) == []


@pytest.mark.slow
def test_no_process_of_the_sandbox_outlives_a_timeout(strict: Sandbox) -> None:
    assert os.geteuid() != 0 or strict.jailed
    result = strict.check(
        "#[test]\nfn hang() {\n    for _ in 0..4 { std::thread::spawn(|| loop { std::hint::spin_loop() }); }\n"
        "    std::thread::sleep(std::time::Duration::from_secs(3600));\n}\n",
        mode="test",
    )
    assert result.verdict == Verdict.TIMEOUT
    assert _alive(strict) == []
