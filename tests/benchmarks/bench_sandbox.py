"""Benchmark: a check through the jailed sandbox vs bare ``rustc --emit=metadata`` on the same files.

    python tests/benchmarks/bench_sandbox.py [--files 40] [--repeat 3] [--json]

Uses the broken programs of koans/*.toml (lib and bin koans; test-mode koans build and run a test binary,
which bare metadata checking does not), else a small built-in set. Sandbox and bare runs are interleaved
file by file so that load from other processes hits both alike. Reports the medians, their ratio (the
target is <= 1.3) and the median time of a cached re-check.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.koans import load_koans
from agent.sandbox import Sandbox, SandboxConfig

BUILTIN = [
    ("bin", 'fn main() {\n    let v = vec![1, 2];\n    let w = v;\n    println!("{:?} {:?}", v, w);\n}\n'),
    ("bin", 'fn main() {\n    let x = 5;\n    x = 6;\n    println!("{x}");\n}\n'),
    ("lib", "pub fn first(v: &Vec<String>) -> String {\n    v[0]\n}\n"),
    ("lib", "pub fn add(a: i32, b: i64) -> i64 {\n    a + b\n}\n"),
    ("bin", 'fn main() {\n    let s = String::from("hi");\n    println!("{}", s.len());\n}\n'),
]


def programs(limit: int) -> list[tuple[str, str, str]]:
    """(mode, edition, source) of up to ``limit`` lib/bin koan broken programs, else the built-in set."""
    try:
        koans = [k for k in load_koans() if k.mode in ("lib", "bin")]
    except Exception:  # a malformed library must not stop the benchmark
        koans = []
    if koans:
        return [(k.mode, k.edition, k.broken) for k in koans[:limit]]
    return [(mode, "2021", src) for mode, src in BUILTIN][:limit]


def bare_check(rustc: str, workdir: Path, mode: str, edition: str, source: str) -> float:
    rel = "src/main.rs" if mode == "bin" else "src/lib.rs"
    (workdir / rel).write_text(source, encoding="utf-8")
    argv = [rustc, "--edition", edition, "--error-format=json", "--crate-name", "main", "--crate-type", mode]
    argv += ["--emit=metadata", "-o", "out.rmeta", rel]
    start = time.perf_counter()
    subprocess.run(argv, cwd=workdir, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3, help="passes over the files")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    uncached = Sandbox(SandboxConfig(cache_entries=0))
    cached = Sandbox(SandboxConfig())
    rustc = str(uncached.sysroot / "bin" / "rustc")
    files = programs(args.files)
    sandbox_times: list[float] = []
    bare_times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="dreamfix-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "src").mkdir()
        for mode, edition, source in files[:3]:  # warm the page cache for both
            uncached.check(source, mode, edition)
            bare_check(rustc, workdir, mode, edition, source)
        for _ in range(args.repeat):
            for mode, edition, source in files:
                sandbox_times.append(uncached.check(source, mode, edition).duration_s)
                bare_times.append(bare_check(rustc, workdir, mode, edition, source))
    for mode, edition, source in files:
        cached.check(source, mode, edition)
    hits = [cached.check(source, mode, edition) for mode, edition, source in files]
    assert all(h.cached for h in hits), "the second check of a program must come from the cache"
    cached_median = statistics.median(h.duration_s for h in hits)
    sandbox_median = statistics.median(sandbox_times)
    bare_median = statistics.median(bare_times)
    figures = {
        "files": len(files),
        "runs_each": len(sandbox_times),
        "jailed": uncached.jailed,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "sandbox_median_s": round(sandbox_median, 4),
        "bare_rustc_median_s": round(bare_median, 4),
        "ratio": round(sandbox_median / bare_median, 3),
        "cached_recheck_median_s": round(cached_median, 6),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"{figures['files']} programs x {args.repeat} passes, jailed={figures['jailed']}, "
            f"load {figures['load_avg_1m']} on {figures['cpus']} cpus"
        )
        print(f"sandbox check (median)       {sandbox_median * 1000:8.1f} ms")
        print(f"bare rustc --emit=metadata   {bare_median * 1000:8.1f} ms")
        print(f"ratio                        {figures['ratio']:8.3f}  (target <= 1.3)")
        print(f"cached re-check (median)     {cached_median * 1e6:8.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
