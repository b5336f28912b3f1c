"""The jailed rustc: every compile and every test binary of untrusted code runs here.

rustc reads files and environment variables at compile time (``include_str!``, ``env!``, ``#[path]``) and a
test binary is arbitrary native code, so each run happens in a bubblewrap jail where only the toolchain, the
C linker's files and a fresh work dir exist, with no network, a clean environment, an unprivileged uid of its
own (so that ``RLIMIT_NPROC`` really bounds fork bombs — root is exempt from it) and rlimits on CPU, memory,
processes and file size, plus a wall-clock deadline that kills the whole pid namespace. The security model
is described in docs/sandbox.md.

Results are cached by the sha256 of everything that determines them (source, mode, edition, tests, rustc
version, limits), in memory and optionally on disk, because the fix loop and the nightly jobs re-judge the
same programs often.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.diagnostics import Diagnostic, error_codes, parse_rustc_json
from agent.koans import EDITIONS, MODES, compose_with_tests

log = logging.getLogger(__name__)

# Each jailed run gets a random uid from this range, so RLIMIT_NPROC counts only that run's processes
# (the limit is per uid) and concurrent runs cannot starve each other. Nothing else on a host uses these.
UID_BASE = 1_900_000_000
UID_SPAN = 90_000_000

# Where things appear inside the jail.
_TOOLCHAIN = "/opt/rust"
_WORK = "/work"
_JAIL_PATH = "/usr/bin"
WORKDIR_PREFIX = "dreamfix-sbx-"


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (field 22 of ``/proc/<pid>/stat``); None when
    that cannot be read (no such process, no procfs). With the pid it names one process for good: a pid is
    reused (a restarted container's daemon is pid 1 again), a pid with its start time is not."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        # Field 2 (the command name, in parentheses) may hold spaces and parentheses: count after the last ")".
        return int(stat[stat.rindex(b")") + 2 :].split()[22 - 3])
    except (OSError, ValueError, IndexError):
        return None


_own_start: tuple[int, int | None] = (-1, None)  # (pid, its start ticks), refreshed after a fork


def own_start_ticks() -> int | None:
    """``process_start_ticks`` of this process (read once per pid)."""
    global _own_start
    pid = os.getpid()
    if _own_start[0] != pid:
        _own_start = (pid, process_start_ticks(pid))
    return _own_start[1]


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether process ``pid`` exists on this host and, when ``start_ticks`` is given, is the process that
    started then — not a later one that got the same pid (a restarted container's daemon is pid 1 again).
    A process whose start time cannot be read counts as alive (the safe side: nothing of it is taken)."""
    if pid == os.getpid():
        own = own_start_ticks()
        return start_ticks is None or own is None or start_ticks == own
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start_ticks is None:
        return True
    actual = process_start_ticks(pid)
    return actual is None or actual == start_ticks


def workdir_owner(name: str) -> tuple[int, int | None] | None:
    """The (pid, start ticks) a work dir's name carries: ``dreamfix-sbx-<pid>-<start ticks>-<random>``, or an
    older version's ``dreamfix-sbx-<pid>-<random>`` (start unknown: None); None for an unnumbered name."""
    if not name.startswith(WORKDIR_PREFIX):
        return None
    parts = name[len(WORKDIR_PREFIX) :].split("-")  # mkdtemp's random part has no "-"
    if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
        return int(parts[0]), int(parts[1])
    if len(parts) == 2 and parts[0].isdigit():
        return int(parts[0]), None
    return None


class SandboxClosed(OSError):
    """The sandbox was shut down (the daemon is stopping): no new jailed run starts."""


_CACHE_VERSION = "2"  # 2: test output lists every test by name (the judge reads it)
_CACHEABLE = ("ok", "compile_error", "test_failed")


class SandboxUnavailable(RuntimeError):
    """The jail cannot run here (bubblewrap or the toolchain missing), and unjailed runs were not allowed."""


class Verdict(enum.StrEnum):
    OK = "ok"
    COMPILE_ERROR = "compile_error"
    TEST_FAILED = "test_failed"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    INVALID_INPUT = "invalid_input"
    SANDBOX_ERROR = "sandbox_error"


@dataclass(frozen=True)
class SandboxConfig:
    """Mirrors ``service.settings.SandboxSettings`` field for field (plus ``cache_dir`` and the rustc to use)."""

    jail: str = "bwrap"  # "bwrap" | "none"
    allow_unjailed: bool = False
    max_concurrency: int = 2
    cpu_seconds: int = 20
    wall_seconds: float = 30.0
    memory_mb: int = 2048
    max_processes: int = 64
    max_file_bytes: int = 64 * 1024 * 1024
    max_output_bytes: int = 256 * 1024
    max_source_bytes: int = 256 * 1024
    cache_entries: int = 4096
    cache_dir: Path | None = None
    rustc: str = "rustc"  # only used outside the jail, to find the real toolchain (``rustc --print sysroot``)
    work_root: Path | None = None  # where per-check work dirs are made (default: the system temp dir)

    def limits_key(self) -> str:
        """The limits that can change a verdict; part of every cache key."""
        return (
            f"cpu={self.cpu_seconds};wall={self.wall_seconds};mem={self.memory_mb};"
            f"nproc={self.max_processes};fsize={self.max_file_bytes};out={self.max_output_bytes};"
            f"jail={self.jail}"
        )


@dataclass
class CheckResult:
    """The sandbox's judgement of one program. ``diagnostics`` are always those of the plain compile."""

    ok: bool
    verdict: Verdict
    diagnostics: list[Diagnostic] = field(default_factory=list)
    output: str = ""  # the test binary's stdout+stderr (capped); empty when nothing ran
    duration_s: float = 0.0
    cached: bool = False
    message: str = ""  # why, in words, when the verdict is not self-explanatory

    @property
    def error_codes(self) -> list[str]:
        return error_codes(self.diagnostics)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verdict": self.verdict.value,
            "error_codes": self.error_codes,
            "diagnostics": [d.to_dict() for d in self.diagnostics],
            "output": self.output,
            "duration_s": round(self.duration_s, 4),
            "cached": self.cached,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        return cls(
            ok=bool(data["ok"]),
            verdict=Verdict(data["verdict"]),
            diagnostics=[Diagnostic.from_dict(d) for d in data.get("diagnostics", [])],
            output=str(data.get("output", "")),
            duration_s=float(data.get("duration_s", 0.0)),
            cached=bool(data.get("cached", False)),
            message=str(data.get("message", "")),
        )


@dataclass(frozen=True)
class Job:
    """One unit of work for ``check_many``/``verify_many``."""

    source: str | bytes
    mode: str = "bin"
    edition: str = "2021"
    tests: str | None = None


@dataclass
class _Process:
    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool
    overflowed: bool
    duration_s: float


def _invalid(message: str) -> CheckResult:
    return CheckResult(ok=False, verdict=Verdict.INVALID_INPUT, message=message)


def _decode_source(source: str | bytes, limit: int, what: str) -> str | CheckResult:
    """The source as text, or an invalid_input result saying what is wrong with it."""
    size = len(source) if isinstance(source, bytes) else len(source.encode("utf-8", "surrogatepass"))
    if size > limit:
        return _invalid(f"{what} is {size} bytes; the limit is {limit} bytes")
    if isinstance(source, bytes):
        try:
            text = source.decode("utf-8")
        except UnicodeDecodeError as exc:
            return _invalid(f"{what} is not valid UTF-8 (bad byte at offset {exc.start})")
    else:
        text = source
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return _invalid(f"{what} is not valid UTF-8 (unpaired surrogate at index {exc.start})")
    if not text.strip():
        return _invalid(f"{what} is empty")
    return text


def _which(name: str) -> str | None:
    found = shutil.which(name)
    return os.path.realpath(found) if found else None


def _world_reachable(path: Path) -> bool:
    """Whether any user may traverse every directory down to ``path``."""
    for directory in (path, *path.parents):
        try:
            if not os.stat(directory).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def _uid_processes(uid: int) -> dict[int, bool]:
    """Processes whose real uid is ``uid``, each mapped to whether it is a zombie (dead, not yet reaped)."""
    found: dict[int, bool] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as handle:
                status = handle.read()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            found[int(entry.name)] = fields.get("State", "").strip().startswith("Z")
    return found


def _wait_until_gone(uid: int, timeout: float = 5.0) -> None:
    """Return once no process of the run's uid is left, zombies included.

    bwrap's outer process exits as soon as the jailed command does, while the pid namespace's other
    processes (a test's children, or everything after a kill) are torn down by the kernel asynchronously;
    a verdict is only returned once they are gone. Any live one still there after ``timeout`` escaped its
    namespace somehow: it is SIGKILLed and logged."""
    deadline = time.monotonic() + timeout
    while pids := _uid_processes(uid):
        if time.monotonic() > deadline:
            live = [pid for pid, zombie in pids.items() if not zombie]
            for pid in live:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            log.error("sandbox processes of uid %d outlived their jail: killed %s", uid, live)
            return
        time.sleep(0.005)


def _run_text(argv: Sequence[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout.strip()


class Sandbox:
    """Compiles and tests untrusted Rust in a bubblewrap jail; thread-safe; at most
    ``max_concurrency`` jailed checks run at once, however many threads call in."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        #: Called with (seconds, answered from the cache) after every check (the daemon's metrics).
        self.on_check: Callable[[float, bool], None] | None = None
        cfg = self.config
        if cfg.jail not in ("bwrap", "none"):
            raise ValueError(f"sandbox jail must be 'bwrap' or 'none', not {cfg.jail!r}")
        try:
            self.sysroot = Path(_run_text([cfg.rustc, "--print", "sysroot"]))
            self._rustc = self.sysroot / "bin" / "rustc"
            self.rustc_version = _run_text([str(self._rustc), "-vV"])
        except (OSError, subprocess.SubprocessError) as exc:
            raise SandboxUnavailable(f"cannot run the Rust toolchain ({cfg.rustc!r}): {exc}") from exc
        self._prlimit = _which("prlimit")
        if self._prlimit is None:
            raise SandboxUnavailable("prlimit (util-linux) is missing; it applies the resource limits")
        self._root = os.geteuid() == 0
        # Whether runs drop to a uid of their own; inside the jail always, outside only if that uid can reach
        # the toolchain (a rustup install under /root cannot be).
        self._drop_uid = self._root
        self.jailed = False
        self._jail_prefix: list[str] | None = None
        self._run_prefix: list[str] = []
        self._tmpfs_size: list[str] = []
        self._no_jail_reason = "jail='none'"
        #: What is in flight, for ``shutdown``: the jails' processes and the host work dirs of running checks.
        self._live_lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._workdirs: set[Path] = set()
        self._closed = False
        if cfg.jail == "bwrap":
            self._jail_prefix = self._bwrap_prefix()
            self.jailed = self._jail_prefix is not None
            if self.jailed:
                self._self_test()
        if not self.jailed:
            why = self._no_jail_reason
            if not cfg.allow_unjailed:
                raise SandboxUnavailable(
                    f"refusing to run untrusted code without a jail ({why}); install bubblewrap, "
                    "or set DREAMFIX_SANDBOX__ALLOW_UNJAILED=true if you accept the risk"
                )
            self._drop_uid = self._root and _world_reachable(self.sysroot / "lib")
            log.warning(
                "SANDBOX IS NOT JAILED (%s): untrusted code can read this machine's files and environment. "
                "Only resource limits and a clean environment apply%s.",
                why,
                "" if self._drop_uid or not self._root else " (and it runs as root: no process limit)",
            )
        self._slots = threading.BoundedSemaphore(max(1, cfg.max_concurrency))
        #: The uids of the latest runs, so that operators and tests can check that none is still alive.
        self.recent_uids: deque[int] = deque(maxlen=1024)
        self._memo: OrderedDict[str, CheckResult] = OrderedDict()
        self._memo_lock = threading.Lock()
        if cfg.cache_dir is not None:
            Path(cfg.cache_dir).mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------------------------------- the jail

    def _bwrap_prefix(self) -> list[str] | None:
        """The fixed part of the bwrap command line: what is visible in the jail, and how it is isolated."""
        bwrap = _which("bwrap")
        if bwrap is None:
            self._no_jail_reason = "bubblewrap (bwrap) is not installed"
            return None
        cc = _which("cc")
        binds: dict[str, str] = {str(self.sysroot): _TOOLCHAIN}  # host path -> jail path
        libdirs = ["/usr/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"]
        if cc:
            binds[cc] = "/usr/bin/cc"
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                multiarch = _run_text([cc, "-print-multiarch"])
                if multiarch:
                    libdirs.append(f"/usr/lib/{multiarch}")
                gcc_dir = os.path.dirname(_run_text([cc, "-print-libgcc-file-name"]))
                collect2_dir = os.path.dirname(_run_text([cc, "-print-prog-name=collect2"]))
                for directory in (gcc_dir, collect2_dir):
                    if directory.startswith("/usr/"):
                        binds[directory] = directory
        ld = _which("ld")
        if ld:  # only used when rustc does not bring its own lld
            binds[ld] = "/usr/bin/ld"
        for directory in libdirs:
            if os.path.isdir(directory):
                binds[os.path.realpath(directory)] = "/lib64" if directory == "/usr/lib64" else directory
        setpriv = _which("setpriv")
        if self._root:
            if setpriv is None:
                self._no_jail_reason = (
                    "setpriv (util-linux) is missing: root cannot be dropped inside the jail"
                )
                return None
            binds[setpriv] = "/usr/bin/setpriv"
        parents: set[str] = set()
        for target in binds.values():
            parent = os.path.dirname(target)
            while parent not in ("/", ""):
                parents.add(parent)
                parent = os.path.dirname(parent)
        # --size (bubblewrap >= 0.7) bounds what a test binary can put in /tmp; older versions lack it.
        has_size = "--size" in subprocess.run([bwrap, "--help"], capture_output=True, text=True).stdout
        self._tmpfs_size = ["--size", str(self.config.max_file_bytes)] if has_size else []
        argv = [bwrap]
        if not self._root:
            argv += ["--unshare-user"]  # unprivileged bwrap needs a user namespace
        argv += [
            "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", "sandbox", "--die-with-parent", "--new-session",
            "--clearenv", "--setenv", "PATH", _JAIL_PATH, "--setenv", "HOME", _WORK,
            "--setenv", "TMPDIR", "/tmp", "--setenv", "RUST_BACKTRACE", "0", "--setenv", "LANG", "C.UTF-8",
        ]  # fmt: skip
        for parent in sorted(parents, key=lambda p: p.count("/")):
            argv += ["--perms", "0755", "--dir", parent]
        for host, target in sorted(binds.items(), key=lambda item: item[1].count("/")):
            argv += ["--ro-bind", host, target]
        argv += ["--symlink", "usr/lib", "/lib", "--dev", "/dev"]
        # Neither the compiler nor the program under test gets a procfs: /proc/<pid>/cmdline of the jail's
        # init (bwrap's argv) and every /proc/<pid>/mountinfo (its own included) name host paths (the
        # toolchain's, the work dir's), and include_bytes! would put them in an error or a binary.
        argv += ["--perms", "0555", "--dir", "/proc"]
        self._run_prefix = list(argv)
        return argv + self._without_proc_self_exe()

    def _without_proc_self_exe(self) -> list[str]:
        """What the compiler needs in place of ``/proc/self/exe``.

        The dynamic loader resolves rustc's ``$ORIGIN/../lib`` runpath through it, so the toolchain's lib
        dir is named outright; and ``gcc-ld/ld.lld`` (rustc's self-contained linker, a wrapper that looks for
        ``rust-lld`` next to its own executable) is replaced by ``rust-lld`` itself, which picks the ELF
        flavour from the name it is called by.
        """
        args = ["--setenv", "LD_LIBRARY_PATH", f"{_TOOLCHAIN}/lib"]
        host = next(
            (
                line.split(":", 1)[1].strip()
                for line in self.rustc_version.splitlines()
                if line.startswith("host:")
            ),
            "",
        )
        bindir = f"lib/rustlib/{host}/bin"
        lld = self.sysroot / bindir / "rust-lld"
        if host and lld.is_file() and (self.sysroot / bindir / "gcc-ld" / "ld.lld").is_file():
            args += ["--ro-bind", str(lld), f"{_TOOLCHAIN}/{bindir}/gcc-ld/ld.lld"]
        return args

    def _self_test(self) -> None:
        """Compile a trivial program in the jail once, so that a jail that cannot work here (no namespaces
        in this container, a memory limit too small for rustc itself) is reported now, in words, instead
        of as a wrong verdict on every check."""
        uid = UID_BASE + secrets.randbelow(UID_SPAN)
        failure, diagnostics = self._compile(
            None, uid, 'fn main() { println!("ok"); }\n', "bin", "2021", False
        )
        if failure is not None:
            detail = failure.message or "; ".join(d.message for d in diagnostics if d.is_error)[:500]
            raise SandboxUnavailable(
                f"the jailed rustc cannot compile hello-world here ({failure.verdict.value}: {detail}); "
                f"check bubblewrap, and that memory_mb={self.config.memory_mb} leaves rustc room to load"
            )

    def _command(
        self,
        workdir: Path | None,
        inner: Sequence[str],
        uid: int,
        writable: bool,
        source_fd: tuple[int, str] = (-1, ""),
    ) -> list[str]:
        cfg = self.config
        memory = cfg.memory_mb * 1024 * 1024
        limits = [
            self._prlimit or "prlimit",
            f"--cpu={cfg.cpu_seconds}:{cfg.cpu_seconds + 1}",
            f"--as={memory}",
            f"--nproc={cfg.max_processes}",
            f"--fsize={cfg.max_file_bytes}",
            "--core=0",
            "--",
        ]
        if not self.jailed:
            return limits + list(inner)
        assert self._jail_prefix is not None
        if workdir is not None:
            mounts = ["--bind" if writable else "--ro-bind", str(workdir), _WORK, "--chdir", _WORK]
        else:
            fd, rel = source_fd
            mounts = ["--perms", "0755", "--dir", f"{_WORK}/{os.path.dirname(rel)}"]
            mounts += ["--perms", "0644", "--file", str(fd), f"{_WORK}/{rel}", "--chdir", _WORK]
        tmp = ["--perms", "01777", *self._tmpfs_size, "--tmpfs", "/tmp"]
        drop: list[str] = []
        if self._root:
            drop = [
                "/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
            ]  # fmt: skip
        prefix = self._jail_prefix if writable or workdir is None else self._run_prefix
        return limits + prefix + tmp + mounts + drop + list(inner)

    def _spawn(
        self, argv: list[str], workdir: Path | None, uid: int, cap: int, pass_fds: Sequence[int] = ()
    ) -> _Process:
        """Run one jailed command; kill its whole session at the deadline or when output exceeds ``cap``."""
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        start = time.perf_counter()
        deadline = start + self.config.wall_seconds
        kwargs: dict[str, Any] = {}
        if not self.jailed:
            assert workdir is not None
            kwargs = {"cwd": str(workdir), "env": {**env, "HOME": str(workdir), "TMPDIR": str(workdir)}}
            if self._drop_uid:
                kwargs.update(user=uid, group=uid, extra_groups=[])
        else:
            kwargs = {"env": env}
        if self._closed:
            raise SandboxClosed("the sandbox is shutting down")
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
            pass_fds=tuple(pass_fds),
            **kwargs,
        )
        with self._live_lock:
            self._running.add(proc)
            closed = self._closed
        try:
            if closed:  # shut down while it started: it must not outlive the shutdown
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            return self._collect(proc, uid, cap, start, deadline)
        finally:
            with self._live_lock:
                self._running.discard(proc)

    def _collect(
        self,
        proc: subprocess.Popen[bytes],
        uid: int,
        cap: int,
        start: float,
        deadline: float,
    ) -> _Process:
        """Read a started jail's output until it exits, the deadline passes or the output exceeds ``cap``."""
        chunks: dict[int, list[bytes]] = {1: [], 2: []}
        total = 0
        timed_out = overflowed = False
        assert proc.stdout is not None and proc.stderr is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, 1)
            sel.register(proc.stderr, selectors.EVENT_READ, 2)
            while sel.get_map():
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    timed_out = True
                    break
                for key, _ in sel.select(timeout=remaining):
                    data = os.read(key.fd, 65536)
                    if not data:
                        sel.unregister(key.fileobj)
                        continue
                    chunks[key.data].append(data)
                    total += len(data)
                if total > cap:
                    overflowed = True
                    break
        if not (timed_out or overflowed):
            try:
                proc.wait(timeout=max(0.0, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                timed_out = True
        if timed_out or overflowed or proc.poll() is None:
            self._kill(proc)
        if self._drop_uid:
            _wait_until_gone(uid)
        proc.stdout.close()
        proc.stderr.close()
        return _Process(
            returncode=proc.returncode,
            stdout=b"".join(chunks[1])[:cap],
            stderr=b"".join(chunks[2])[:cap],
            timed_out=timed_out,
            overflowed=overflowed,
            duration_s=time.perf_counter() - start,
        )

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the session; bwrap's --die-with-parent then takes the whole pid namespace down with it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def shutdown(self, wait_s: float = 2.0) -> list[Path]:
        """The daemon is stopping: no new jailed run starts, every running jail is SIGKILLed (its process
        group; its pid namespace goes with it) and the work dirs of the runs in flight are removed. Returns
        those dirs. Idempotent."""
        with self._live_lock:
            self._closed = True
            procs = list(self._running)
            dirs = list(self._workdirs)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        until = time.monotonic() + wait_s
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, until - time.monotonic()))
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)
        if procs or dirs:
            log.warning(
                "sandbox shutdown: killed %d running jail(s), removed %d work dir(s)", len(procs), len(dirs)
            )
        return dirs

    def sweep_stale_workdirs(self) -> list[Path]:
        """At start-up: remove work dirs left by a killed process (``dreamfix-sbx-<pid>-<start>-*`` whose
        process is gone, or whose pid now belongs to a process that started at another time; an older
        version's ``dreamfix-sbx-<pid>-*`` whose pid is gone; an unnumbered one once it is an hour old).
        Returns what was removed."""
        root = Path(self.config.work_root or tempfile.gettempdir())
        removed: list[Path] = []
        for path in root.glob(f"{WORKDIR_PREFIX}*"):
            if not path.is_dir() or path.is_symlink():
                continue
            owner = workdir_owner(path.name)
            if owner is not None:
                stale = not pid_alive(*owner)
            else:
                try:
                    stale = time.time() - path.stat().st_mtime > 3600
                except OSError:
                    continue
            if stale:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        if removed:
            log.warning("removed %d stale sandbox work dirs", len(removed))
        return removed

    # --------------------------------------------------------------------------------- compile and run

    def _workdir(self, uid: int) -> Path:
        root = self.config.work_root
        start = own_start_ticks()
        owner = f"{os.getpid()}-{start}" if start is not None else str(os.getpid())
        with self._live_lock:
            if self._closed:
                raise SandboxClosed("the sandbox is shutting down")
            workdir = Path(
                tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{owner}-", dir=str(root) if root else None)
            )
            self._workdirs.add(workdir)
        (workdir / "src").mkdir()
        if self._drop_uid:
            os.chown(workdir, uid, uid)
        return workdir

    def _compile(
        self, workdir: Path | None, uid: int, source: str, mode: str, edition: str, test: bool
    ) -> tuple[CheckResult | None, list[Diagnostic]]:
        """rustc on ``source``; returns (a failure result, or None when it compiled; the diagnostics).

        Without a ``workdir`` (a jailed metadata check: nothing needs to outlive the run) the source is
        handed to the jail through a memfd and rustc writes only to the jail's own tmpfs, so no host
        directory is made or removed — the common check's fast path.
        """
        rel = "src/main.rs" if mode == "bin" else "src/lib.rs"
        rustc = f"{_TOOLCHAIN}/bin/rustc" if self.jailed else str(self._rustc)
        argv = [rustc, "--edition", edition, "--error-format=json", "--crate-name", "main"]
        if test:
            argv += ["--test", "-C", "debuginfo=0", "-C", "opt-level=0", "-o", "test-bin"]
        else:
            out = "/tmp/out.rmeta" if workdir is None else "out.rmeta"
            argv += ["--crate-type", "bin" if mode == "bin" else "lib", "--emit=metadata", "-o", out]
        memfd = -1
        if workdir is None:
            memfd = os.memfd_create("dreamfix-source")
            os.write(memfd, source.encode("utf-8"))
            os.lseek(memfd, 0, os.SEEK_SET)
        else:
            path = workdir / rel
            path.write_text(source, encoding="utf-8")
            path.chmod(0o644)
            (workdir / "src").chmod(0o755)
        # Diagnostics are allowed more room than program output: a correct program can have many warnings.
        cap = self.config.max_output_bytes * 8
        try:
            command = self._command(workdir, [*argv, rel], uid, writable=True, source_fd=(memfd, rel))
            proc = self._spawn(command, workdir, uid, cap, pass_fds=(memfd,) if memfd >= 0 else ())
        finally:
            if memfd >= 0:
                os.close(memfd)
        stderr = proc.stderr.decode("utf-8", "replace")
        diagnostics = parse_rustc_json(stderr)
        failure = self._classify(proc, stderr, diagnostics, "rustc")
        if failure is None and proc.returncode != 0:
            if any(d.is_error for d in diagnostics):
                failure = CheckResult(ok=False, verdict=Verdict.COMPILE_ERROR)
            else:
                tail = "\n".join(line for line in stderr.splitlines() if not line.startswith("{"))[-2000:]
                failure = CheckResult(
                    ok=False,
                    verdict=Verdict.SANDBOX_ERROR,
                    message=f"rustc exited with status {proc.returncode} without an error diagnostic: {tail}",
                )
        if failure is not None:
            failure.diagnostics = diagnostics
        return failure, diagnostics

    def _classify(
        self, proc: _Process, text: str, diagnostics: list[Diagnostic], what: str
    ) -> CheckResult | None:
        """Map a killed or resource-starved process to its verdict; None when it just ran to an exit code."""
        cfg = self.config
        if proc.timed_out:
            return CheckResult(
                ok=False, verdict=Verdict.TIMEOUT, message=f"{what} ran past the {cfg.wall_seconds:g} s limit"
            )
        if proc.overflowed:
            return CheckResult(
                ok=False,
                verdict=Verdict.OUTPUT_LIMIT,
                message=f"{what} wrote more output than the limit allows; it was stopped",
            )
        rc = proc.returncode
        if rc in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
            return CheckResult(
                ok=False,
                verdict=Verdict.OUTPUT_LIMIT,
                message=f"{what} tried to write a file over the {cfg.max_file_bytes} byte limit",
            )
        if rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGKILL) and not any(
            d.is_error for d in diagnostics
        ):
            return CheckResult(
                ok=False,
                verdict=Verdict.TIMEOUT,
                message=f"{what} used up its {cfg.cpu_seconds} s of CPU time",
            )
        if rc != 0 and (
            "memory allocation of" in text
            or "out of memory" in text.lower()
            or "cannot allocate memory" in text.lower()
            or "failed to allocate" in text.lower()
        ):
            return CheckResult(
                ok=False,
                verdict=Verdict.MEMORY_LIMIT,
                message=f"{what} ran out of its {cfg.memory_mb} MB of memory",
            )
        if rc != 0 and (
            text.startswith(("bwrap:", "setpriv:", "prlimit:"))
            or "error while loading shared libraries" in text
        ):
            return CheckResult(
                ok=False, verdict=Verdict.SANDBOX_ERROR, message=f"the jail failed: {text[-500:]}"
            )
        return None

    def _run_tests(self, workdir: Path, uid: int) -> CheckResult:
        binary = f"{_WORK}/test-bin" if self.jailed else str(workdir / "test-bin")
        cap = self.config.max_output_bytes
        command = self._command(
            workdir, [binary, "--color", "never", "--format", "pretty"], uid, writable=False
        )
        proc = self._spawn(command, workdir, uid, cap)
        output = (proc.stdout + proc.stderr).decode("utf-8", "replace")[:cap]
        failure = self._classify(proc, output, [], "the test binary")
        if failure is not None:
            failure.output = output
            return failure
        if proc.returncode != 0:
            return CheckResult(
                ok=False,
                verdict=Verdict.TEST_FAILED,
                output=output,
                message=f"tests failed (exit status {proc.returncode})",
            )
        return CheckResult(ok=True, verdict=Verdict.OK, output=output)

    def _judge(self, source: str, mode: str, edition: str, tests: str | None) -> CheckResult:
        uid = UID_BASE + secrets.randbelow(UID_SPAN)
        self.recent_uids.append(uid)
        # A host work dir only when a binary must outlive the compile (test builds) or there is no jail.
        needs_workdir = mode == "test" or tests is not None or not self.jailed
        try:
            workdir = self._workdir(uid) if needs_workdir else None
        except SandboxClosed as exc:
            return CheckResult(ok=False, verdict=Verdict.SANDBOX_ERROR, message=str(exc))
        try:
            with self._slots:
                plain_dir = workdir if (mode == "test" or not self.jailed) else None
                failure, diagnostics = self._compile(
                    plain_dir, uid, source, mode, edition, test=mode == "test"
                )
                if failure is not None:
                    return failure
                if mode == "test":
                    assert workdir is not None
                    outcome = self._run_tests(workdir, uid)
                    if not outcome.ok or tests is None:
                        outcome.diagnostics = diagnostics
                        return outcome
                if tests is None:
                    return CheckResult(ok=True, verdict=Verdict.OK, diagnostics=diagnostics)
                assert workdir is not None
                composed = compose_with_tests(source, tests)
                failure, test_diags = self._compile(workdir, uid, composed, mode, edition, test=True)
                if failure is not None:
                    # The program compiles but not together with its tests: the tests no longer hold.
                    return CheckResult(
                        ok=False,
                        verdict=Verdict.TEST_FAILED
                        if failure.verdict == Verdict.COMPILE_ERROR
                        else failure.verdict,
                        diagnostics=diagnostics,
                        output="".join(d.rendered for d in test_diags if d.is_error)[
                            : self.config.max_output_bytes
                        ],
                        message="the tests do not compile against this program"
                        if failure.verdict == Verdict.COMPILE_ERROR
                        else failure.message,
                    )
                outcome = self._run_tests(workdir, uid)
                outcome.diagnostics = diagnostics
                return outcome
        except SandboxClosed as exc:
            return CheckResult(ok=False, verdict=Verdict.SANDBOX_ERROR, message=str(exc))
        except OSError as exc:
            log.exception("sandbox failure")
            return CheckResult(ok=False, verdict=Verdict.SANDBOX_ERROR, message=f"sandbox failure: {exc}")
        finally:
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
                with self._live_lock:
                    self._workdirs.discard(workdir)

    # ------------------------------------------------------------------------------------------ caching

    def _key(self, source: str, mode: str, edition: str, tests: str | None) -> str:
        h = hashlib.sha256()
        for part in (_CACHE_VERSION, self.rustc_version, self.config.limits_key(), mode, edition):
            h.update(part.encode() + b"\0")
        h.update(b"T" + tests.encode("utf-8") if tests is not None else b"N")
        h.update(b"\0" + source.encode("utf-8"))
        return h.hexdigest()

    def _cache_get(self, key: str) -> CheckResult | None:
        with self._memo_lock:
            hit = self._memo.get(key)
            if hit is not None:
                self._memo.move_to_end(key)
        if hit is None and self.config.cache_dir is not None:
            path = Path(self.config.cache_dir) / key[:2] / f"{key}.json"
            try:
                hit = CheckResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError):
                hit = None
            if hit is not None:
                self._memo_put(key, hit)
        if hit is None:
            return None
        return CheckResult(
            ok=hit.ok,
            verdict=hit.verdict,
            diagnostics=list(hit.diagnostics),
            output=hit.output,
            duration_s=hit.duration_s,
            cached=True,
            message=hit.message,
        )

    def _memo_put(self, key: str, result: CheckResult) -> None:
        with self._memo_lock:
            self._memo[key] = result
            self._memo.move_to_end(key)
            while len(self._memo) > max(0, self.config.cache_entries):
                self._memo.popitem(last=False)

    def _cache_put(self, key: str, result: CheckResult) -> None:
        if result.verdict.value not in _CACHEABLE:
            return  # timeouts and sandbox failures may not repeat
        self._memo_put(key, result)
        if self.config.cache_dir is not None:
            folder = Path(self.config.cache_dir) / key[:2]
            try:
                folder.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(result.to_dict(), handle)
                os.replace(tmp, folder / f"{key}.json")
            except OSError as exc:
                log.warning("sandbox cache write failed: %s", exc)

    # ------------------------------------------------------------------------------------ the public API

    def check(self, source: str | bytes, mode: str = "bin", edition: str = "2021") -> CheckResult:
        """Compile ``source`` (lib/bin: metadata only; test: build with --test and run its tests)."""
        return self.verify(source, mode, edition, None)

    def verify(
        self, source: str | bytes, mode: str = "bin", edition: str = "2021", tests: str | None = None
    ) -> CheckResult:
        """The judge: ``source`` compiles in ``mode`` and, when ``tests`` is given, passes them.

        The tests are appended with ``compose_with_tests`` and built with ``--test``; the diagnostics of
        the result are always those of the plain compile, so callers see the program's own errors.
        """
        start = time.perf_counter()
        if mode not in MODES:
            return _invalid(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if edition not in EDITIONS:
            return _invalid(f"unknown edition {edition!r}; expected one of {', '.join(EDITIONS)}")
        text = _decode_source(source, self.config.max_source_bytes, "the source")
        if isinstance(text, CheckResult):
            return text
        if tests is not None:
            checked_tests = _decode_source(tests, self.config.max_source_bytes, "the tests")
            if isinstance(checked_tests, CheckResult):
                return checked_tests
        key = self._key(text, mode, edition, tests)
        hit = self._cache_get(key)
        if hit is not None:
            hit.duration_s = time.perf_counter() - start
            if self.on_check is not None:
                self.on_check(hit.duration_s, True)
            return hit
        result = self._judge(text, mode, edition, tests)
        result.duration_s = time.perf_counter() - start
        if not self._closed:  # a run killed by the shutdown says nothing about the program
            self._cache_put(key, result)
        if self.on_check is not None:
            self.on_check(result.duration_s, False)
        return result

    def check_many(self, jobs: Iterable[Job | str]) -> list[CheckResult]:
        """``check`` for many programs in parallel (bounded by max_concurrency); results in input order."""
        return self.verify_many(
            Job(j) if isinstance(j, str) else Job(j.source, j.mode, j.edition) for j in jobs
        )

    def verify_many(self, jobs: Iterable[Job]) -> list[CheckResult]:
        """``verify`` for many jobs in parallel (bounded by max_concurrency); results in input order."""
        job_list = list(jobs)
        if not job_list:
            return []
        workers = max(1, min(self.config.max_concurrency, len(job_list)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
            return list(pool.map(lambda j: self.verify(j.source, j.mode, j.edition, j.tests), job_list))
