"""Fault and load benchmark, in one run (issue 17):

1. a real uvicorn server (SQLite, the jailed sandbox, the tiny model unless --model) under a MIX of fix
   clients: model clients (nothing rustc suggests fixes their code) keep the small model queue busy while
   suggestion-only clients send code rustc's own suggestion fixes (a missing ``mut``). Prints the status
   codes per kind, 429s (rejected at admission: fine) apart from 504s of accepted requests and other 5xx
   (failures), Retry-After values and the suggestion-only latency p50/p95;
2. /readyz latency percentiles while a flood of slow checks fills the check lane;
3. kill -9 of a real ``python -m service serve`` daemon mid-night, and again while a run is queued behind a
   running night: a new daemon on the same database and data dir is started and the seconds from its start
   until a new night is accepted and reaches running/succeeded are measured; then, after that daemon's clean
   shutdown (SIGTERM), the ``dreamfix-sbx-*`` dirs left in its sandbox work root are counted;
4. the load average before and after.

    python tests/benchmarks/bench_faults.py --clients 8 --seconds 20 --flood 16 --probes 200

Not a test: it prints figures. Tiny settings (--clients 2 --seconds 3 --flood 4 --probes 20) take a
few minutes on a loaded box (the kill -9 part starts four daemons).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
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
from tests.helpers import AUTH, TOKEN, make_settings, short_night_env, wait_ready
from tests.live_server import LiveServer, free_port

# Nothing rustc suggests fixes this: every request goes to the model queue.
NEEDS_MODEL = 'fn main() {{\n    let total = undefined_helper({n});\n    println!("{{total}}");\n}}\n'
# rustc's own suggestion (E0384: make this binding mutable) fixes this: no model work at all.
NEEDS_MUT = 'fn main() {{\n    let count = {n};\n    count = 2;\n    println!("{{count}}");\n}}\n'


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


class _Tally:
    """Status codes, Retry-After values and latencies of one kind of fix client."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[int] = Counter()
        self.retry_after: list[int] = []
        self.ok_latencies: list[float] = []
        #: every answer other than 429: (seconds into the storm it was sent, status, latency, attempts)
        self.answers: list[tuple[float, int, float, int | None]] = []

    def add(self, r: httpx.Response, seconds: float, sent_at: float = 0.0) -> None:
        with self.lock:
            self.statuses[r.status_code] += 1
            if r.status_code != 429:
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                attempts = body.get("attempts", (body.get("detail") or {}).get("attempts"))
                n = len(attempts) if isinstance(attempts, list) else None
                self.answers.append((round(sent_at, 2), r.status_code, round(seconds, 3), n))
            if "Retry-After" in r.headers:
                self.retry_after.append(int(r.headers["Retry-After"]))
            if r.status_code == 200:
                self.ok_latencies.append(seconds)

    def summary(self) -> dict[str, Any]:
        st = self.statuses
        return {
            "statuses": dict(sorted(st.items())),
            "rejected_429": st[429],
            "accepted_then_504": st[504],
            "other_5xx": sum(n for code, n in st.items() if code >= 500 and code != 504),
            "retry_after_max_s": max(self.retry_after, default=None),
            "retry_after_median_s": statistics.median(self.retry_after) if self.retry_after else None,
            "ok_p50_s": round(pct(self.ok_latencies, 0.5), 3),
            "ok_p95_s": round(pct(self.ok_latencies, 0.95), 3),
            "answers": sorted(self.answers),
        }


def fix_storm(url: str, clients: int, suggestion_clients: int, seconds: float) -> dict[str, Any]:
    tallies = {"model": _Tally(), "suggestion": _Tally()}
    began = time.monotonic()
    stop_at = began + seconds

    def client(i: int) -> None:
        kind = "suggestion" if i < suggestion_clients else "model"
        template = NEEDS_MUT if kind == "suggestion" else NEEDS_MODEL
        n = 0
        # Each client from an address of its own (127.0.0.11, .12, ...: all loopback on Linux), as distinct
        # clients are: the check lane's per-client share then applies per client, not to the whole mix.
        transport = httpx.HTTPTransport(local_address=f"127.0.0.{11 + i}")
        with httpx.Client(base_url=url, timeout=300, transport=transport) as c:
            while time.monotonic() < stop_at:
                n += 1
                started = time.monotonic()
                r = c.post("/v1/fix", json={"code": template.format(n=i * 100000 + n)})
                tallies[kind].add(r, time.monotonic() - started, started - began)
                if r.status_code == 429:
                    time.sleep(min(1.0, int(r.headers.get("Retry-After", "1"))))
                elif kind == "suggestion":
                    time.sleep(0.1)  # a steady trickle, not a second flood

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return {kind: t.summary() for kind, t in tallies.items()}


#: The flooding clients run in a process of their own (threads there), as real clients would: in this
#: process their 16 threads would share the GIL with the in-process server and time the benchmark, not it.
FLOOD_CLIENTS = """
import json, sys, threading, time
from collections import Counter
import httpx
url, flood = sys.argv[1], int(sys.argv[2])
codes = json.loads(sys.stdin.readline())
statuses, lock, done = Counter(), threading.Lock(), threading.Event()
def flooder(i):
    n = 0
    with httpx.Client(base_url=url, timeout=300) as c:
        while not done.is_set():
            code = codes[(i + n * flood) % len(codes)]
            n += 1
            r = c.post("/v1/check", json={"code": code, "mode": "test"})
            with lock:
                statuses[r.status_code] += 1
threads = [threading.Thread(target=flooder, args=(i,), daemon=True) for i in range(flood)]
for t in threads:
    t.start()
print("flooding", flush=True)
sys.stdin.readline()  # the benchmark closes stdin when its probes are done
done.set()
for t in threads:
    t.join(timeout=60)
with lock:
    print(json.dumps(dict(statuses)), flush=True)
"""


def check_flood(url: str, flood: int, probes: int, millis: int) -> dict[str, Any]:
    # Distinct programs (no cache hits), enough for the flood's length; each test sleeps ``millis``.
    codes = [slow_check(n, millis) for n in range(20000)]
    flooders = subprocess.Popen(
        [sys.executable, "-c", FLOOD_CLIENTS, url, str(flood)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert flooders.stdin is not None and flooders.stdout is not None
    flooders.stdin.write(json.dumps(codes) + "\n")
    flooders.stdin.flush()
    assert flooders.stdout.readline().strip() == "flooding"
    latencies: list[float] = []
    ready_statuses: Counter[int] = Counter()
    try:
        time.sleep(0.5)  # let the flood fill the lane
        with httpx.Client(base_url=url, timeout=30) as c:
            for _ in range(probes):
                start = time.monotonic()
                r = c.get("/readyz")
                latencies.append(time.monotonic() - start)
                ready_statuses[r.status_code] += 1
                time.sleep(0.02)
    finally:
        out, _ = flooders.communicate("done\n", timeout=120)
    statuses = {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}
    return {
        "check_statuses": dict(sorted(statuses.items())),
        "readyz_statuses": dict(sorted(ready_statuses.items())),
        "readyz_p50_ms": round(1000 * pct(latencies, 0.5), 2),
        "readyz_p99_ms": round(1000 * pct(latencies, 0.99), 2),
        "readyz_max_ms": round(1000 * max(latencies, default=float("nan")), 2),
    }


def daemon_env(data: Path, model_dir: Path, work_root: Path, seed_steps: int) -> dict[str, str]:
    return {
        **os.environ,
        "TMPDIR": str(work_root),  # the sandbox's work dirs land here, to be counted afterwards
        **short_night_env(data, model_dir, TOKEN, seed_steps),
    }


def serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port)],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: kill -9 takes its sandbox children too
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_for(what: str, timeout: float, proc: subprocess.Popen[bytes], log: Path, probe: Any) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited (rc {proc.returncode}) waiting for {what}:\n{log.read_text()}")
        try:
            got = probe()
        except httpx.TransportError:
            got = None
        if got:
            return got
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


def run_status(c: httpx.Client, run_id: int) -> dict[str, Any]:
    return dict(c.get(f"/admin/runs/{run_id}", headers=AUTH).json())


def kill_mid_run(env: dict[str, str], log: Path, queued: bool) -> dict[str, Any]:
    """Daemon A: a night training (and, if ``queued``, a day run queued behind it), then kill -9."""
    proc, url = serve(env, log)
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            wait_for("/readyz", 180, proc, log, lambda: c.get("/readyz").status_code == 200)
            night = c.post("/admin/runs", json={"kind": "night"}, headers=AUTH).json()["run_id"]
            # Killed as soon as it is running (the night's own steps take minutes on a loaded box).
            wait_for("the night to run", 300, proc, log, lambda: run_status(c, night)["status"] == "running")
            killed = {"night": run_status(c, night)["status"]}
            if queued:
                day = c.post("/admin/runs", json={"kind": "day"}, headers=AUTH).json()["run_id"]
                killed["day"] = run_status(c, day)["status"]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    return killed


def restart_and_night(env: dict[str, str], log: Path, work_root: Path) -> dict[str, Any]:
    """Daemon B on the same database and data dir: seconds from its start until a new night is accepted
    and reaches running/succeeded; then a clean shutdown and the sandbox dirs left behind."""
    started = time.monotonic()
    proc, url = serve(env, log)
    out: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=url, timeout=30) as c:

            def accepted() -> int | None:
                r = c.post("/admin/runs", json={"kind": "night"}, headers=AUTH)
                return int(r.json()["run_id"]) if r.status_code == 202 else None

            night = wait_for("a night to be accepted", 180, proc, log, accepted)
            out["accepted_after_s"] = round(time.monotonic() - started, 2)
            state = wait_for(
                "the night to run",
                180,
                proc,
                log,
                lambda: (
                    run_status(c, night)["status"] in ("running", "succeeded", "failed")
                    and run_status(c, night)
                ),
            )
            out["running_after_s"] = round(time.monotonic() - started, 2)
            out["new_night_first_status"] = state["status"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # a clean shutdown: the running night's lease is released
        try:
            proc.wait(timeout=90)
            out["clean_exit_rc"] = proc.returncode
        except subprocess.TimeoutExpired:
            out["clean_exit_rc"] = "no exit 90 s after SIGTERM; killed"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    time.sleep(0.5)
    out["leftover_sandbox_dirs"] = len(list(work_root.glob("dreamfix-sbx-*")))
    return out


def kill9(tmp: Path, model_dir: Path, queued: bool) -> dict[str, Any]:
    base = tmp / ("kill9-queued" if queued else "kill9-night")
    work_root = base / "sandbox-work"
    work_root.mkdir(parents=True)
    log = base / "daemons.log"
    killed = kill_mid_run(daemon_env(base / "data", model_dir, work_root, 400), log, queued)
    after = restart_and_night(daemon_env(base / "data", model_dir, work_root, 2), log, work_root)
    return {"killed_while": killed, **after}


def print_report(args: argparse.Namespace, report: dict[str, Any]) -> None:
    fix, flood = report["fix"], report["flood"]
    print(f"load average before: {report['loadavg_before']}")
    print(
        f"fix mix ({args.clients} clients, {args.suggestion_clients} suggestion-only, {args.seconds:g}s, "
        f"queue {args.queue_size}, request timeout {args.timeout:g}s):"
    )
    for kind, t in fix.items():
        print(
            f"  {kind}: {t['statuses']}  429 (rejected) {t['rejected_429']}, 504 of accepted "
            f"{t['accepted_then_504']}, other 5xx {t['other_5xx']}; 200 latency p50 {t['ok_p50_s']}s "
            f"p95 {t['ok_p95_s']}s; Retry-After median {t['retry_after_median_s']}s max {t['retry_after_max_s']}s"
        )
    print(
        f"check flood ({args.flood} clients): checks {flood['check_statuses']}, /readyz {flood['readyz_statuses']}"
    )
    print(
        f"  /readyz p50 {flood['readyz_p50_ms']} ms, p99 {flood['readyz_p99_ms']} ms, "
        f"max {flood['readyz_max_ms']} ms over {args.probes} probes"
    )
    print(
        f"leftover sandbox work dirs after the in-process server's shutdown: {report['leftover_sandbox_dirs']}"
    )
    for name in ("kill9_night", "kill9_queued"):
        k = report.get(name)
        if k and "error" in k:
            print(f"{name}: FAILED: {k['error']}")
        elif k:
            print(
                f"{name}: killed while {k['killed_while']}; new daemon: night accepted after "
                f"{k['accepted_after_s']}s, {k['new_night_first_status']} after {k['running_after_s']}s, "
                f"exit after SIGTERM: {k['clean_exit_rc']}; leftover dreamfix-sbx-* dirs after clean shutdown "
                f"{k['leftover_sandbox_dirs']}"
            )
    print(f"load average after: {report['loadavg_after']}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--suggestion-clients", type=int, help="of --clients, how many send suggestion-only code")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--flood", type=int, default=16, help="concurrent clients sending slow checks")
    ap.add_argument("--probes", type=int, default=200, help="/readyz requests timed during the flood")
    ap.add_argument("--check-ms", type=int, default=1500, help="how long each flooding check's test sleeps")
    ap.add_argument("--queue-size", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=10.0, help="limits.request_timeout_s")
    ap.add_argument("--model", help="model folder (default: the tiny model)")
    ap.add_argument("--no-kill9", action="store_true", help="skip the kill -9 part")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.suggestion_clients is None:
        args.suggestion_clients = args.clients // 2
    return args


def load_storm(args: argparse.Namespace, tmp: Path, model_dir: Path, report: dict[str, Any]) -> None:
    work_root = tmp / "sandbox-work"
    work_root.mkdir()
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
    with LiveServer(create_app(services)) as server:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            wait_ready(c)
            # Warm-up: the first generation pays one-off start-up costs; not part of the figures.
            c.post("/v1/fix", json={"code": NEEDS_MODEL.format(n=-1)}, timeout=600)
            c.post("/v1/fix", json={"code": NEEDS_MUT.format(n=-1)}, timeout=600)
        report["fix"] = fix_storm(server.url, args.clients, args.suggestion_clients, args.seconds)
        report["flood"] = check_flood(server.url, args.flood, args.probes, args.check_ms)
    time.sleep(1.0)
    report["leftover_sandbox_dirs"] = len(list(work_root.glob("dreamfix-sbx-*")))


def main() -> int:
    args = parse_args()
    report: dict[str, Any] = {"clients": args.clients, "seconds": args.seconds, "flood_clients": args.flood}
    report["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
    tmp = Path(tempfile.mkdtemp(prefix="dreamfix-faults-"))
    model_dir = Path(args.model) if args.model else save_tiny_model(tmp / "model")
    load_storm(args, tmp, model_dir, report)
    if not args.no_kill9:
        for name, queued in (("kill9_night", False), ("kill9_queued", True)):
            try:
                report[name] = kill9(tmp, model_dir, queued)
            except RuntimeError as exc:  # a daemon that died or stalled: reported, and the run goes on
                report[name] = {"error": str(exc)[:300]}
    report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print_report(args, report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
