"""Load benchmark: N concurrent httpx clients against a real uvicorn server (tiny model, SQLite, the jailed
sandbox) for a fixed time, with a promotion of a task version in the middle of the run. Prints throughput,
p50/p95 latency, the status codes seen, and which route versions the requests reported before and after.

    python tests/benchmarks/bench_service_load.py --clients 8 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from learner.tiny import save_tiny_model
from service.api.app import create_app
from service.app_services import Services
from tests.helpers import install_version, make_settings, wait_ready
from tests.live_server import LiveServer

# Routes to the "moves" task (E0382), the task the mid-run promotion installs.
CODE = 'fn main() { let v = vec![1, 2, 3]; let w = v; println!("{:?} {:?}", v, w); }\n'


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--distinct",
        action="store_true",
        help="make every request's code unique (no sandbox cache hits: every request runs rustc)",
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dreamfix-load-"))
    model_dir = save_tiny_model(tmp / "model")
    settings = make_settings(
        tmp / "data", model_dir, limits={"queue_size": 64, "max_body_bytes": 65536, "max_code_bytes": 16384}
    )
    services = Services.build(settings)
    services.sync_interval_s = 0.5
    lat: list[float] = []
    statuses: Counter[int] = Counter()
    versions: list[tuple[float, object]] = []
    lock = threading.Lock()
    with LiveServer(create_app(services)) as server:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            wait_ready(c)
        start = time.monotonic()
        stop_at = start + args.seconds

        counter = iter(range(10**9))

        def client() -> None:
            with httpx.Client(base_url=server.url, timeout=120) as c:
                while time.monotonic() < stop_at:
                    code = CODE + (f"// request {next(counter)}\n" if args.distinct else "")
                    t0 = time.monotonic()
                    try:
                        r = c.post("/v1/fix", json={"code": code})
                        status = r.status_code
                        version = r.json().get("route", {}).get("version") if status == 200 else None
                    except httpx.HTTPError:
                        status, version = -1, None
                    with lock:
                        lat.append(time.monotonic() - t0)
                        statuses[status] += 1
                        versions.append((t0 - start, version))

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(args.seconds / 2)
        promoted_at = time.monotonic() - start
        install_version(settings.db_url, tmp)
        for t in threads:
            t.join()
        wall = time.monotonic() - start
    services.stop()
    ok = statuses.get(200, 0)
    lat.sort()
    before = Counter(v for t, v in versions if t < promoted_at)
    after = Counter(v for t, v in versions if t > promoted_at + 2)
    report = {
        "clients": args.clients,
        "distinct_code": args.distinct,
        "seconds": round(wall, 1),
        "requests": len(lat),
        "ok": ok,
        "failures": len(lat) - ok,
        "statuses": dict(statuses),
        "throughput_rps": round(ok / wall, 2),
        "p50_s": round(statistics.median(lat), 3) if lat else None,
        "p95_s": round(lat[int(0.95 * (len(lat) - 1))], 3) if lat else None,
        "promotion_at_s": round(promoted_at, 1),
        "route_versions_before": {str(k): v for k, v in before.items()},
        "route_versions_after_2s": {str(k): v for k, v in after.items()},
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
