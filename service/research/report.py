"""Markdown tables from an experiment folder's stage results (what docs/results.md quotes).

Every figure printed here is read from the folder's JSON files; nothing is computed that the stages did not
record, except means over the rows shown. Stages that have not run yet are listed as missing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.research import STAGES


def _load(root: Path, stage: str) -> dict[str, Any] | None:
    path = root / f"{stage}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_f(c, digits) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _seeds(data: dict[str, Any]) -> list[str]:
    rows = []
    for name, entry in sorted(data.get("training", {}).items()):
        losses = entry["losses"]
        tail = losses[-3:]
        rows.append([name, len(losses), losses[0], sum(tail) / len(tail), entry["seconds"]])
    out = ["Training runs (loss = mean NLL per answer token; 'end' = mean of the last 3 steps):", ""]
    out += _table(["run", "steps", "loss start", "loss end", "seconds"], rows)
    examples = data.get("examples", {})
    if examples:
        out += ["Training examples per task: " + ", ".join(f"{t} {n}" for t, n in examples.items()), ""]
    return out


def _strategies(data: dict[str, Any]) -> list[str]:
    summary = data["summary"]
    families = sorted(next(iter(summary.values()))["edit_nll_by_family"])
    with_pass = all("pass_rate" in e for e in summary.values())
    header = ["strategy", "edit NLL (all)", *families, "koans worse than base", "whole-answer NLL"]
    if with_pass:
        header += ["pass rate", "regressions"]
    rows = []
    for name, entry in summary.items():
        row: list[Any] = [name, entry["edit_nll"]]
        row += [entry["edit_nll_by_family"].get(f) for f in families]
        row += [len(entry.get("edit_nll_worse_than_base", [])), entry["nll"]]
        if with_pass:
            row += [entry["pass_rate"], len(entry.get("regressions", []))]
        rows.append(row)
    count = len(next(iter(data["scores"].values())))
    out = [f"Edit NLL (nats/token on the changed lines; lower is better), {count} eval koans:", ""]
    out += _table(header, rows)
    if with_pass:
        out += [
            f"One-shot pass rate (greedy; compiles and passes the koan's tests), {count} eval koans; "
            "regressions = koans the base model fixes and this strategy does not:",
            "",
        ]
        out += _table(
            ["strategy", "pass rate", *families, "fixed", "regressions", "completion tokens", "generate s"],
            [
                [
                    name,
                    entry["pass_rate"],
                    *[entry["pass_by_family"].get(f) for f in families],
                    sum(bool(v.get("fixed")) for v in data["scores"][name].values()),
                    ", ".join(entry.get("regressions", [])) or "none",
                    sum(v.get("completion_tokens", 0) for v in data["scores"][name].values()),
                    sum(v.get("generate_seconds", 0.0) for v in data["scores"][name].values()),
                ]
                for name, entry in summary.items()
            ],
        )
    sizes = data.get("bytes_per_task", {})
    if sizes:
        out += [", ".join(f"bytes per task, {k}: {v:,}" for k, v in sizes.items()), ""]
    return out


def _heatmap(data: dict[str, Any]) -> list[str]:
    families = data["families"]
    configs = list(data["columns"])
    out = [
        "Δ edit NLL vs base (row = coefficients applied, column = eval family; negative = the fix became "
        "more likely):",
        "",
    ]
    rows = [[c, *values] for c, values in zip(configs, data["matrix"], strict=False)]
    out += _table(["coefficients", *families], rows)
    if "pass_matrix" in data:
        base = data.get("base_pass_by_family", {})
        out += [
            "Δ one-shot pass rate vs base (same layout; positive = more koans fixed). Base pass rate: "
            + ", ".join(f"{f} {base[f]:.2f}" for f in families if f in base),
            "",
        ]
        out += _table(
            ["coefficients", *families], [[c, *v] for c, v in zip(configs, data["pass_matrix"], strict=False)]
        )
    check = data.get("applied_check", {})
    if check:
        changes = ", ".join(f"{t} {v:.4f}" for t, v in check["max_abs_logit_change"].items())
        out += [f"Applied check on `{check['koan']}` (max |Δ logit| vs base): {changes}", ""]
    return out


def _sequential(data: dict[str, Any]) -> list[str]:
    tasks = data["tasks"]
    out = [f"Tasks in arrival order: {', '.join(tasks)}. Score = {data.get('score', '')}.", ""]
    out += _table(["", *tasks], [["base", *[data["base"][t] for t in tasks]]])
    for method, matrix in data["R"].items():
        out += [f"R matrix, {method} (row = after night i):", ""]
        out += _table(["night", *tasks], [[i + 1, *row] for i, row in enumerate(matrix)])
    metrics = data.get("metrics", {})
    rows = [[m, v.get("acc"), v.get("bwt"), v.get("fwt"), v.get("forgetting")] for m, v in metrics.items()]
    out += ["GEM metrics (BWT < 0 = forgetting):", ""]
    out += _table(["method", "ACC", "BWT", "FWT", "forgetting"], rows, digits=4)
    merges = data.get("share_merges", [])
    if merges:
        out += ["Share Phase 3 merges (relative reconstruction error of each old task):", ""]
        rows = [
            [m["night"], ", ".join(f"{t} {e:.3f}" for t, e in m["errors"].items()), m.get("k_after")]
            for m in merges
        ]
        out += _table(["night", "errors", "mean k after"], rows)
    summary = data.get("final_summary")
    if summary:
        families = sorted(next(iter(summary.values()))["pass_by_family"])
        out += [
            "What each method serves after the last night, by verified one-shot fixes (regressions = koans "
            "the base model fixes and the method does not):",
            "",
        ]
        rows = [
            [
                m,
                e["pass_rate"],
                *[e["pass_by_family"][f] for f in families],
                ", ".join(e["regressions"]) or "none",
            ]
            for m, e in summary.items()
        ]
        out += _table(["method", "pass rate", *families, "regressions"], rows)
    return out


def _subspace(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, title in (
        ("disjoint_tasks", "bases from disjoint task subsets"),
        ("other_seeds", "other seeds"),
    ):
        part = data.get(key)
        if not part:
            continue
        groups = " vs ".join(part.get("comparison_groups", []))
        out += [f"Subspace stability, {title} ({groups}), mean over layers:", ""]
        rows = []
        for side, stats in part["comparison_summary"].items():
            rows.append(
                [
                    side,
                    stats["k_a"]["mean"],
                    stats["k_b"]["mean"],
                    stats["similarity"]["mean"],
                    stats["similarity"]["min"],
                    stats["similarity"]["max"],
                    stats["random_baseline"]["mean"],
                    stats["mean_cosine"]["mean"],
                ]
            )
        out += _table(
            ["side", "k₁", "k₂", "similarity", "min", "max", "random expectation", "mean cos θ"], rows
        )
        loo = part.get("leave_one_out_summary")
        if loo:
            out += [
                "Leave-one-out reconstruction error of a held-out adapter (relative Frobenius): "
                f"without the mean {loo['error_without_mean']['mean']:.3f}, "
                f"with the mean {loo['error_with_mean']['mean']:.3f} "
                f"({int(loo['error_with_mean']['count'])} adapters)",
                "",
            ]
    return out


def _sweep(data: dict[str, Any]) -> list[str]:
    points = data["points"]
    with_pass = all("pass_rate" in p for p in points.values())
    rerun = any("earlier_run" in p for p in points.values())
    header = ["configuration", "φ used", "score (−edit NLL)", "bytes per task", "mean k", "final loss"]
    header += ["merge error"] + (["pass rate", "fixed"] if with_pass else [])
    header += ["earlier run: score / final loss"] if rerun else []
    rows = []
    for label, p in points.items():
        name = f"{label} (same basis as `{p['same_basis_as']}`)" if "same_basis_as" in p else label
        row = [name, p.get("phi_used"), p.get("score"), p.get("bytes"), p.get("k"), p.get("final_loss")]
        row += [p.get("merge_worst_error")]
        if with_pass:
            row += [p["pass_rate"], ", ".join(p.get("fixed", [])) or "none"]
        if rerun:
            earlier = p.get("earlier_run", {})
            row += [" / ".join(_f(earlier[k], 4) for k in ("score", "final_loss") if k in earlier) or ""]
        rows.append(row)
    out = [f"Held-out task `{data.get('held_out_task')}` learned in bases from the other tasks:", ""]
    return out + _table(header, rows)


RENDER = {
    "seeds": _seeds,
    "strategies": _strategies,
    "heatmap": _heatmap,
    "sequential": _sequential,
    "subspace": _subspace,
    "sweep": _sweep,
}


def markdown(root: Path, figures: Path | None = None, figures_link: str | None = None) -> str:
    """All recorded stages as markdown; with ``figures`` the folder's PNGs are copied there and linked."""
    config = json.loads((root / "config.json").read_text())
    lines = [f"### Experiment `{root.name}`", ""]
    lines += ["Config: " + ", ".join(f"{k}={v}" for k, v in config.items()), ""]
    copied: set[str] = set()
    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
        for png in sorted((root / "figures").glob("*.png")):
            shutil.copy2(png, figures / f"{root.name}-{png.name}")
            copied.add(png.stem)
    for stage in STAGES:
        data = _load(root, stage)
        lines += [f"#### {stage}", ""]
        if data is None:
            lines += ["(not run yet)", ""]
            continue
        try:
            lines += RENDER[stage](data)
        except (KeyError, StopIteration) as exc:  # a stage still running saves partial results
            lines += [f"(incomplete: the stage has not finished; missing {exc})", ""]
            continue
        lines += [f"Wall time of the stage's last run: {data.get('wall_seconds_this_run', 0):.0f} s", ""]
        link = figures_link or (str(figures) if figures is not None else None)
        for stem in sorted(s for s in copied if s.startswith(stage)):
            lines += [f"![{stem}]({link}/{root.name}-{stem}.png)", ""]
    return "\n".join(lines)
