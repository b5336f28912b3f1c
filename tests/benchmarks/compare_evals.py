"""Paired comparison of `dreamfix eval --out` reports: pass rates with 95% Wilson intervals, the discordant
pairs, an exact two-sided sign (McNemar) test, and each koan's own seconds: the generate and check seconds of
its attempts (a record's ``wall_seconds`` is when it finished inside its batch of koans, not its own cost).

    python tests/benchmarks/compare_evals.py A.json:STRATEGY B.json:STRATEGY [--json OUT]

Each argument names a report and one strategy in it (``docs/data/int8-eval/base-int8.json:base``); only the
koans present in every report are compared, so a partly finished run compares what it has. Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from service.gate import sign_test_p, wilson_interval  # noqa: E402


def two_sided_sign_p(wins: int, losses: int) -> float:
    """Exact two-sided sign test on the discordant pairs (McNemar's exact test)."""
    if wins + losses == 0:
        return 1.0
    return min(1.0, 2 * sign_test_p(max(wins, losses), min(wins, losses)))


def load(spec: str) -> tuple[str, dict[str, dict[str, Any]]]:
    path, _, strategy = spec.rpartition(":")
    report = json.loads(Path(path).read_text())
    records = report["strategies"][strategy]["records"]
    return f"{Path(path).stem}:{strategy}", {r["problem_id"]: r for r in records}


def own_seconds(record: dict[str, Any]) -> float:
    return sum(float(a["generate_seconds"]) + float(a["check_seconds"]) for a in record["attempts"])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reports", nargs=2, metavar="REPORT.json:STRATEGY")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    (name_a, a), (name_b, b) = (load(spec) for spec in args.reports)
    common = sorted(set(a) & set(b))
    n = len(common)
    rows = []
    for name, records in ((name_a, a), (name_b, b)):
        fixed = sum(bool(records[k]["fixed"]) for k in common)
        walls = [own_seconds(records[k]) for k in common]
        low, high = wilson_interval(fixed, n) or (0.0, 1.0)
        rows.append(
            {
                "name": name,
                "fixed": fixed,
                "n": n,
                "ci95": [low, high],
                "own_p50_s": statistics.median(walls) if walls else None,
                "own_p95_s": percentile(walls, 0.95) if walls else None,
                "own_total_s": sum(walls),
            }
        )
    only_a = [k for k in common if a[k]["fixed"] and not b[k]["fixed"]]
    only_b = [k for k in common if b[k]["fixed"] and not a[k]["fixed"]]
    p = two_sided_sign_p(len(only_b), len(only_a))
    for row in rows:
        low, high = row["ci95"]
        print(
            f"{row['name']:28s} {row['fixed']:3d}/{n} = {row['fixed'] / max(n, 1):6.1%}  "
            f"95% CI {low:.1%}–{high:.1%}  own s p50 {row['own_p50_s']:.1f} p95 {row['own_p95_s']:.1f} total {row['own_total_s']:.0f}"
        )
    print(f"discordant: only {name_a}: {len(only_a)} {only_a}")
    print(f"            only {name_b}: {len(only_b)} {only_b}")
    print(f"exact two-sided sign (McNemar) test: p = {p:.3f}")
    if args.json:
        out = {"n": n, "rows": rows, "only_a": only_a, "only_b": only_b, "p_two_sided": p}
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
