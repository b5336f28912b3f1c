"""Continual-learning metrics against hand-computed matrices, and the experiment plots."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import pytest

from service.research.metrics import cl_metrics


def test_no_forgetting_gives_zero_bwt_and_forgetting() -> None:
    R = [[0.5, 0.2], [0.5, 0.8]]
    m = cl_metrics(R, base=[0.4, 0.1])
    assert m["acc"] == pytest.approx(0.65)  # (0.5 + 0.8) / 2
    assert m["bwt"] == pytest.approx(0.0)  # R[1][0] - R[0][0]
    assert m["fwt"] == pytest.approx(0.1)  # R[0][1] - base[1]
    assert m["forgetting"] == pytest.approx(0.0)


def test_forgetting_gives_the_hand_computed_negative_bwt() -> None:
    R = [
        [0.9, 0.1, 0.2],
        [0.6, 0.8, 0.3],
        [0.3, 0.5, 0.7],
    ]
    m = cl_metrics(R, base=[0.1, 0.1, 0.1])
    assert m["acc"] == pytest.approx(0.5)  # (0.3 + 0.5 + 0.7) / 3
    assert m["bwt"] == pytest.approx(-0.45)  # ((0.3 - 0.9) + (0.5 - 0.8)) / 2
    assert m["fwt"] == pytest.approx(0.1)  # ((0.1 - 0.1) + (0.3 - 0.1)) / 2
    assert m["forgetting"] == pytest.approx(0.45)  # ((0.9 - 0.3) + (0.8 - 0.5)) / 2


def test_forgetting_counts_a_peak_reached_after_the_task_was_learned() -> None:
    # Task 0 improves to 0.9 after night 1, then drops to 0.6: BWT sees +0.1, forgetting sees the 0.3 drop.
    R = [
        [0.5, 0.0, 0.0],
        [0.9, 0.7, 0.0],
        [0.6, 0.7, 0.8],
    ]
    m = cl_metrics(R, base=[0.0, 0.0, 0.0])
    assert m["bwt"] == pytest.approx((0.1 + 0.0) / 2)
    assert m["forgetting"] == pytest.approx((0.3 + 0.0) / 2)
    assert m["acc"] == pytest.approx(0.7)


def test_forgetting_ignores_scores_from_before_a_task_was_learned() -> None:
    # Task 1's adapter makes it worse than the base model (0.5 -> 0.4) and it stays there: nothing was
    # forgotten, though the best score in its column (0.5, night 0) came before it was learned.
    R = [
        [0.7, 0.5, 0.2],
        [0.7, 0.4, 0.2],
        [0.7, 0.4, 0.9],
    ]
    m = cl_metrics(R, base=[0.3, 0.5, 0.2])
    assert m["forgetting"] == pytest.approx(0.0)
    assert m["bwt"] == pytest.approx(0.0)
    assert m["fwt"] == pytest.approx(((0.5 - 0.5) + (0.2 - 0.2)) / 2)


@pytest.mark.parametrize(
    ("R", "base", "match"),
    [
        ([[1.0]], [1.0], "at least 2 tasks"),
        ([], [], "at least 2 tasks"),
        ([[1.0, 2.0], [1.0]], [0.0, 0.0], "square"),
        ([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], [0.0, 0.0], "square"),
        ([[1.0, 2.0], [1.0, 2.0]], [0.0], "one score per task"),
        ([[1.0, math.nan], [1.0, 2.0]], [0.0, 0.0], r"R\[0\]\[1\] is not finite"),
        ([[1.0, 2.0], [1.0, 2.0]], [0.0, math.inf], r"base\[1\] is not finite"),
    ],
)
def test_invalid_shapes_and_values_are_rejected(R: list[list[float]], base: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cl_metrics(R, base)


# ---------------------------------------------------------------- plots
def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def plots() -> ModuleType:
    pytest.importorskip("matplotlib")
    from service.research import plots

    return plots


def test_heatmap_writes_a_png(plots: ModuleType, tmp_path: Path) -> None:
    out = plots.heatmap(
        [[0.9, 0.1], [0.6, 0.8]],
        ["night 1", "night 2"],
        ["moves", "lifetimes"],
        tmp_path / "sub" / "h.png",
        "R matrix",
        "pass rate",
    )
    assert out == tmp_path / "sub" / "h.png" and _is_png(out)
    with pytest.raises(ValueError, match="row labels"):
        plots.heatmap([[0.9, 0.1]], ["a", "b"], ["x", "y"], tmp_path / "bad.png", "t", "c")
    with pytest.raises(ValueError, match="column labels"):
        plots.heatmap([[0.9, 0.1]], ["a"], ["x"], tmp_path / "bad.png", "t", "c")


def test_learning_curves_writes_a_png(plots: ModuleType, tmp_path: Path) -> None:
    curves = {"naive": [[0.9, 0.1], [0.3, 0.8]], "share": [[0.9, 0.1], [0.85, 0.8]]}
    out = plots.learning_curves(curves, ["moves", "lifetimes"], tmp_path / "c.png", "forgetting")
    assert _is_png(out)
    with pytest.raises(ValueError, match="2 x 2"):
        plots.learning_curves({"naive": [[0.9, 0.1, 0.2]] * 3}, ["a", "b"], tmp_path / "bad.png", "t")


def test_tradeoff_writes_a_png(plots: ModuleType, tmp_path: Path) -> None:
    points = [
        {"label": "lora r8", "bytes": 4_000_000, "score": 0.61},
        {"label": "share k4", "bytes": 12_000, "score": 0.58},
    ]
    out = plots.tradeoff(points, tmp_path / "t.png", "size vs pass rate", "bytes per task", "pass rate")
    assert _is_png(out)
    with pytest.raises(ValueError, match="lacks"):
        plots.tradeoff([{"label": "x", "bytes": 10}], tmp_path / "bad.png", "t", "x", "y")
    with pytest.raises(ValueError, match="> 0"):
        plots.tradeoff([{"label": "x", "bytes": 0, "score": 1.0}], tmp_path / "bad.png", "t", "x", "y")


def test_bars_writes_a_png(plots: ModuleType, tmp_path: Path) -> None:
    groups = {"moves": {"base": 0.4, "share": 0.6}, "lifetimes": {"base": 0.2, "share": 0.5}}
    out = plots.bars(groups, tmp_path / "b.png", "pass rate per family", "pass rate")
    assert _is_png(out)
    with pytest.raises(ValueError, match="expected"):
        plots.bars({"moves": {"base": 0.4, "share": 0.6}, "x": {"base": 0.1}}, tmp_path / "bad.png", "t", "y")
