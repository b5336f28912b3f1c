"""The router on real rustc diagnostics of the koans, its fallback to base and the served versions."""

from __future__ import annotations

import pytest

from agent.diagnostics import Diagnostic
from agent.koans import Koan, load_koans
from agent.sandbox import Job, Sandbox, SandboxConfig
from router import BASE_ROUTE, DEFAULT_RULES, Route, TaskRouter, TaskRule, make_route_fn, resolve
from router.tasks import COARSE_GROUPS, POOLED_TASK, task_groups


def _error(code: str | None, message: str, rendered: str = "") -> Diagnostic:
    return Diagnostic("error", code, message, 1, 1, rendered or f"error[{code}]: {message}")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    return Sandbox(SandboxConfig(cache_dir=tmp_path_factory.mktemp("sandbox-cache")))


def _diagnostics_of(sandbox: Sandbox, koans: list[Koan]) -> list[list[Diagnostic]]:
    results = sandbox.check_many([Job(k.broken, k.mode, k.edition) for k in koans])
    return [r.diagnostics for r in results]


def test_one_koan_per_family_routes_to_its_family(sandbox: Sandbox) -> None:
    firsts: dict[str, Koan] = {}
    for koan in load_koans():
        if koan.is_eval and koan.family != "multi" and len(koan.codes) == 1:
            firsts.setdefault(koan.family, koan)
    router = TaskRouter()
    routed = {
        k.family: router.route(d).task
        for k, d in zip(firsts.values(), _diagnostics_of(sandbox, [*firsts.values()]), strict=True)
    }
    wrong = {family: task for family, task in routed.items() if task != family}
    assert len(routed) >= 10
    # At most one family whose first koan's only error is, by its code, another family's error.
    assert len(wrong) <= 1, wrong


@pytest.mark.slow
def test_routing_accuracy_on_every_single_family_koan(sandbox: Sandbox) -> None:
    koans = [k for k in load_koans() if k.family != "multi"]
    router = TaskRouter()
    decisions = [router.route(d) for d in _diagnostics_of(sandbox, koans)]
    hits = sum(d.task == k.family for k, d in zip(koans, decisions, strict=True))
    accuracy = hits / len(koans)
    print(f"routing accuracy on {len(koans)} single-family koans: {accuracy:.1%}")
    assert accuracy >= 0.88
    # Grouped, a koan routes to its family's group at least as often (a miss between two families of one
    # group is a hit), and never to a group no rule of its errors belongs to.
    coarse = TaskRouter(groups=task_groups("coarse"))
    grouped = [coarse.route(d) for d in _diagnostics_of(sandbox, koans)]
    group_hits = sum(g.task == COARSE_GROUPS[k.family] for k, g in zip(koans, grouped, strict=True))
    print(f"coarse-group routing accuracy: {group_hits / len(koans):.1%}")
    assert group_hits >= hits
    for fine, group in zip(decisions, grouped, strict=True):
        if fine.task is not None:
            assert group.task == COARSE_GROUPS[fine.task]


def test_pattern_beats_code_and_rendered_text_counts(sandbox: Sandbox) -> None:
    by_id = {k.id: k for k in load_koans()}
    koans = [
        by_id["concurrency-001"],
        by_id["traits-001"],
        by_id["concurrency-002"],
        by_id["result_option-003"],
    ]
    router = TaskRouter()
    tasks = [router.route(d).task for d in _diagnostics_of(sandbox, koans)]
    # E0277 "cannot be sent between threads" is concurrency, a plain E0277 is traits; E0373 inside
    # thread::spawn (seen in the rendered source) is concurrency; E0599 on an Option is result_option.
    assert tasks == ["concurrency", "traits", "concurrency", "result_option"]


def test_mixed_errors_below_threshold_fall_back_to_base() -> None:
    diagnostics = [
        _error("E0382", "borrow of moved value: `x`"),
        _error("E0308", "mismatched types"),
        _error("E0596", "cannot borrow `v` as mutable, as it is not declared as mutable"),
    ]
    decision = TaskRouter(threshold=0.5).route(diagnostics)
    assert decision.task is None
    assert decision.confidence == pytest.approx(1 / 3)
    assert "below" in decision.reason
    # The same errors with a lower bar route to the first task in rule order among the tied ones.
    assert TaskRouter(threshold=0.3).route(diagnostics).task == "moves"


def test_confidence_is_the_share_of_errors_explained() -> None:
    diagnostics = [
        _error("E0382", "use of moved value: `a`"),
        _error("E0505", "cannot move out of `b` because it is borrowed"),
        _error("E0308", "mismatched types"),
        Diagnostic("warning", None, "unused variable: `z`", 3, 1, "warning: unused"),
    ]
    decision = TaskRouter().route(diagnostics)
    assert (decision.task, decision.matched_codes) == ("moves", ("E0382", "E0505"))
    assert decision.confidence == pytest.approx(2 / 3)


def test_no_errors_or_unknown_codes_go_to_base() -> None:
    router = TaskRouter()
    assert router.route([]).task is None
    warning_only = [Diagnostic("warning", None, "unused variable", 1, 1, "warning: unused variable")]
    assert router.route(warning_only).task is None
    unknown = router.route([_error("E9999", "something new")])
    assert unknown.task is None and unknown.confidence == 0.0 and "E9999" in unknown.reason


def test_bad_rules_are_rejected_clearly() -> None:
    with pytest.raises(ValueError, match="task key"):
        TaskRule("Bad Key")
    with pytest.raises(ValueError, match="bad message pattern"):
        TaskRule("x", message_patterns=("(unclosed",))
    with pytest.raises(ValueError, match="duplicate"):
        TaskRouter([TaskRule("a", frozenset({"E1"})), TaskRule("a", frozenset({"E2"}))])
    with pytest.raises(ValueError, match="threshold"):
        TaskRouter(threshold=1.5)


def test_routes_carry_the_served_version_and_fall_back_to_base() -> None:
    router = TaskRouter()
    moved = router.route([_error("E0382", "use of moved value: `x`")])
    borrowed = router.route([_error("E0499", "cannot borrow `x` as mutable more than once at a time")])
    served = {"moves": 3}
    assert resolve(moved, served) == Route("moves", 3) and resolve(moved, served).key == ("moves", 3)
    assert resolve(borrowed, served) == Route("borrows", None)  # no served version: base
    assert resolve(borrowed, served).key is None
    assert resolve(router.route([]), served) == BASE_ROUTE and BASE_ROUTE.key is None
    route = make_route_fn(router, {"borrows": 1})
    assert route([_error("E0499", "cannot borrow `x` as mutable more than once at a time")]).key == (
        "borrows",
        1,
    )
    assert route([_error("E0382", "use of moved value: `x`")]).key is None


def test_every_default_rule_has_a_coarse_group_and_the_groups_are_few() -> None:
    assert set(COARSE_GROUPS) == {r.task for r in DEFAULT_RULES}
    assert TaskRouter(groups=task_groups("coarse")).tasks == ["ownership", "items", "types"]
    assert TaskRouter(groups=task_groups("pooled")).tasks == [POOLED_TASK]
    assert (
        TaskRouter(groups=task_groups("fine")).tasks == TaskRouter().tasks == [r.task for r in DEFAULT_RULES]
    )
    assert TaskRouter(groups=task_groups("coarse")).members("ownership")[:3] == [
        "concurrency",
        "closures",
        "moves",
    ]
    with pytest.raises(ValueError, match="unknown task grouping"):
        task_groups("medium")
    with pytest.raises(ValueError, match="without a group"):
        TaskRouter(groups={"moves": "ownership"})
    with pytest.raises(ValueError, match="task key"):
        TaskRouter(groups={r.task: "Not A Key" for r in DEFAULT_RULES})


def test_a_group_explains_its_members_errors_once_each() -> None:
    # moves + borrows + mutability: a third each for the fine router (base at 0.5); one group for all three
    diagnostics = [
        _error("E0382", "borrow of moved value: `x`"),
        _error("E0499", "cannot borrow `v` as mutable more than once at a time"),
        _error("E0596", "cannot borrow `v` as mutable, as it is not declared as mutable"),
    ]
    assert TaskRouter().route(diagnostics).task is None
    grouped = TaskRouter(groups=task_groups("coarse")).route(diagnostics)
    assert (grouped.task, grouped.confidence) == ("ownership", 1.0)
    assert grouped.matched_codes == ("E0382", "E0499", "E0596")
    # a diagnostic two rules of one group explain (closures' and concurrency's patterns) counts once, so
    # confidence stays a share of the errors
    both = _error(None, "captured variable cannot escape `FnMut` closure body in thread::spawn")
    other = _error("E0308", "mismatched types")
    assert TaskRouter().explaining_tasks(both) == ["concurrency", "closures"]
    decision = TaskRouter(groups=task_groups("coarse")).route([both, other])
    assert (decision.task, decision.confidence) == ("ownership", pytest.approx(0.5))
    # a tie goes to the group of the earliest rule that explained an error, as the fine router picks:
    # type_mismatch's rule comes before unresolved's, though the items group has an earlier rule
    tie = [other, _error("E0425", "cannot find value `y` in this scope")]
    assert TaskRouter().route(tie).task == "type_mismatch"
    assert TaskRouter(groups=task_groups("coarse")).route(tie).task == "types"
    # pooled: whatever a rule explains goes to the one task; what nothing explains still goes to base
    pooled = TaskRouter(groups=task_groups("pooled"))
    assert pooled.route([*diagnostics, other]).task == POOLED_TASK
    assert pooled.route([_error("E9999", "something new")]).task is None


def test_the_daemon_routes_with_its_grouping_setting() -> None:
    from service.settings import Settings

    moved = [_error("E0382", "use of moved value: `x`")]
    assert Settings().router.grouping == "coarse"
    assert Settings().router.task_router().route(moved).task == "ownership"
    assert Settings(router={"grouping": "fine"}).router.task_router().route(moved).task == "moves"
    assert Settings(router={"grouping": "pooled"}).router.task_router().route(moved).task == POOLED_TASK
    assert Settings(router={"grouping": "fine"}, night={"tasks": ["moves"]}).night.tasks == ["moves"]
    with pytest.raises(ValueError, match=r"not tasks of router\.grouping='coarse'"):
        Settings(night={"tasks": ["moves"]})
