"""Fault benchmark: a real uvicorn server (SQLite, the jailed sandbox, the tiny model unless --model) under
overload. Prints the status codes N fix clients get from a small model queue (200 / 429 / 504 and the
Retry-After values announced), /readyz latency percentiles while a flood of slow checks fills the check
lane, and the sandbox work dirs this process left behind after shutdown.

    python tests/benchmarks/bench_faults.py --clients 8 --seconds 20 --flood 16 --probes 200

Not a test: it prints figures. Tiny settings (--clients 2 --seconds 3 --flood 4 --probes 20) run in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from learner.tiny import save_tiny_model
from service.api.app import create_app
from service.app_services import Services
from tests.helpers import make_settings, wait_ready
from tests.live_server import LiveServer

# Nothing rustc suggests fixes this: every request goes to the model queue.
NEEDS_MODEL = 'fn main() {{\n    let total = undefined_helper({n});\n    println!("{{total}}");\n}}\n'


def slow_check(n: int, millis: int) -> str:
    return (
        f"// flood {n} {time.time_ns()}\n"
        f"pub fn nap() {{ std::thread::sleep(std::time::Duration::from_millis({millis})); }}\n"
        "#[cfg(test)]\nmod tests {\n    #[test]\n    fn naps() { super::nap(); }\n}\n"
    )


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fix_storm(url: str, clients: int, seconds: float) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    retry_after: list[int] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(i: int) -> None:
        n = 0
        with httpx.Client(base_url=url, timeout=300) as c:
            while time.monotonic() < stop_at:
                n += 1
                r = c.post("/v1/fix", json={"code": NEEDS_MODEL.format(n=i * 100000 + n)})
                with lock:
                    statuses[r.status_code] += 1
                    if "Retry-After" in r.headers:
                        retry_after.append(int(r.headers["Retry-After"]))
                if r.status_code == 429:
                    time.sleep(min(1.0, int(r.headers.get("Retry-After", "1"))))

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return {
        "statuses": dict(sorted(statuses.items())),
        "retry_after_max_s": max(retry_after, default=None),
        "retry_after_median_s": statistics.median(retry_after) if retry_after else None,
    }


def check_flood(url: str, flood: int, probes: int, millis: int) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    done = threading.Event()

    def flooder(i: int) -> None:
        n = 0
        with httpx.Client(base_url=url, timeout=300) as c:
            while not done.is_set():
                n += 1
                r = c.post("/v1/check", json={"code": slow_check(i * 100000 + n, millis), "mode": "test"})
                with lock:
                    statuses[r.status_code] += 1

    latencies: list[float] = []
    ready_statuses: Counter[int] = Counter()
    with ThreadPoolExecutor(flood) as pool:
        for i in range(flood):
            pool.submit(flooder, i)
        time.sleep(0.5)  # let the flood fill the lane
        with httpx.Client(base_url=url, timeout=30) as c:
            for _ in range(probes):
                start = time.monotonic()
                r = c.get("/readyz")
                latencies.append(time.monotonic() - start)
                ready_statuses[r.status_code] += 1
                time.sleep(0.02)
        done.set()
    return {
        "check_statuses": dict(sorted(statuses.items())),
        "readyz_statuses": dict(sorted(ready_statuses.items())),
        "readyz_p50_ms": round(1000 * pct(latencies, 0.5), 2),
        "readyz_p99_ms": round(1000 * pct(latencies, 0.99), 2),
        "readyz_max_ms": round(1000 * max(latencies, default=float("nan")), 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--flood", type=int, default=16, help="concurrent clients sending slow checks")
    ap.add_argument("--probes", type=int, default=200, help="/readyz requests timed during the flood")
    ap.add_argument("--check-ms", type=int, default=1500, help="how long each flooding check's test sleeps")
    ap.add_argument("--queue-size", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=10.0, help="limits.request_timeout_s")
    ap.add_argument("--model", help="model folder (default: the tiny model)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dreamfix-faults-"))
    work_root = tmp / "sandbox-work"
    work_root.mkdir()
    model_dir = Path(args.model) if args.model else save_tiny_model(tmp / "model")
    settings = make_settings(
        tmp / "data",
        model_dir,
        agent={"max_attempts": 2, "max_new_tokens": 64, "suggestions_first": True},
        limits={
            "queue_size": args.queue_size,
            "request_timeout_s": args.timeout,
            "max_body_bytes": 65536,
            "max_code_bytes": 16384,
            "check_workers": 2,
            "check_queue_size": 4,
            "check_timeout_s": 10.0,
        },
    )
    os.environ["TMPDIR"] = str(work_root)  # the sandbox's work dirs land here, to be counted afterwards
    tempfile.tempdir = None
    services = Services.build(settings)
    report: dict[str, Any] = {"clients": args.clients, "seconds": args.seconds, "flood": args.flood}
    with LiveServer(create_app(services)) as server:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            wait_ready(c)
            # Warm-up: the first generation pays one-off start-up costs; not part of the figures.
            c.post("/v1/fix", json={"code": NEEDS_MODEL.format(n=-1)}, timeout=600)
        report["fix"] = fix_storm(server.url, args.clients, args.seconds)
        report["flood"] = check_flood(server.url, args.flood, args.probes, args.check_ms)
    time.sleep(1.0)
    left = sorted(p.name for p in work_root.glob("dreamfix-sbx-*"))
    report["leftover_sandbox_dirs"] = len(left)
    fix, flood = report["fix"], report["flood"]
    print(
        f"fix storm ({args.clients} clients, {args.seconds:g}s, queue {args.queue_size}): {fix['statuses']}"
    )
    print(f"  Retry-After median {fix['retry_after_median_s']}s, max {fix['retry_after_max_s']}s")
    print(
        f"check flood ({args.flood} clients): checks {flood['check_statuses']}, /readyz {flood['readyz_statuses']}"
    )
    print(
        f"  /readyz p50 {flood['readyz_p50_ms']} ms, p99 {flood['readyz_p99_ms']} ms, "
        f"max {flood['readyz_max_ms']} ms over {args.probes} probes"
    )
    print(f"leftover sandbox work dirs after shutdown: {len(left)} {left[:5]}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
