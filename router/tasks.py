"""Diagnostics → task key: which family of rustc errors a problem belongs to, and how sure we are.

Each task owns a set of error codes plus message patterns. A pattern is more specific than a code (E0277 is a
trait-bound error in general, but "cannot be sent between threads safely" is a concurrency error), so when a
diagnostic matches some rule by pattern, only those rules explain it. The decision's confidence is the share
of the problem's error diagnostics the chosen task explains; below the threshold the problem goes to the
base model, because routing a mixed bag to one task's coefficients is how one task's learning hurts another.

This package does not import ``agent``: diagnostics come in as anything with ``level``, ``code`` and
``message`` (see :class:`DiagnosticLike`).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class DiagnosticLike(Protocol):
    """The three fields of a rustc diagnostic the router reads (agent.diagnostics.Diagnostic has them)."""

    @property
    def level(self) -> str: ...

    @property
    def code(self) -> str | None: ...

    @property
    def message(self) -> str: ...


@dataclass(frozen=True)
class TaskRule:
    """A task and the diagnostics it explains: any of ``codes`` or any regex of ``message_patterns``."""

    task: str
    codes: frozenset[str] = frozenset()
    message_patterns: tuple[str, ...] = ()
    _compiled: tuple[re.Pattern[str], ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.task or not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", self.task):
            raise ValueError(f"task key must be lower-case [a-z0-9_.-], not {self.task!r}")
        object.__setattr__(self, "codes", frozenset(self.codes))
        try:
            compiled = tuple(re.compile(p, re.IGNORECASE) for p in self.message_patterns)
        except re.error as exc:
            raise ValueError(f"task {self.task}: bad message pattern: {exc}") from exc
        object.__setattr__(self, "_compiled", compiled)

    def matches_message(self, message: str) -> bool:
        return any(p.search(message) for p in self._compiled)

    def matches_code(self, code: str | None) -> bool:
        return code is not None and code in self.codes


def _rule(task: str, codes: str = "", patterns: Sequence[str] = ()) -> TaskRule:
    return TaskRule(task, frozenset(codes.split()), tuple(patterns))


#: The default rules: rustc errors into families, named like the koan families (koans/<family>.toml), so that
#: a family's practice trains, and its eval measures, the coefficients its errors are routed to — the
#: family's own with ``router.grouping = fine``, its group's (``COARSE_GROUPS``) by default.
#: Codes say what a diagnostic is in general; patterns (on the message, else on the rendered text) carve out
#: the specific cases — "`Rc<..>` cannot be sent between threads" is E0277 but a concurrency error. Rule
#: order breaks ties between tasks that explain equally many errors.
DEFAULT_RULES: tuple[TaskRule, ...] = (
    _rule(
        "concurrency",
        "",
        (
            r"cannot be (sent|shared) between threads safely",
            r"data in an `Arc`",
            r"thread::spawn|\.spawn\(",
        ),
    ),
    _rule(
        "edition2024",
        "",
        (
            r"extern blocks must be unsafe",
            r"unsafe attribute used without unsafe",
            r"reserved keyword `gen`",
            r"call to unsafe function `(std::env::)?(set_var|remove_var)`",
            r"trait bound `!: ",
            r"never type fallback",
            r"implicitly-borrowing pattern",
        ),
    ),
    _rule(
        "result_option",
        "",
        (
            r"the `\?` operator can only be used",
            r"`\?` couldn't convert the error",
            r"found for enum `(Option|Result)<",
            r"expected `(Option|Result)<[^`]*`, found",
            r"expected `[^`]*`, found `(Option|Result)<",
            r"by summing an iterator over elements of type `(Option|Result)<",
        ),
    ),
    _rule(
        "closures",
        "E0373 E0500 E0501 E0521 E0524 E0525 E0595 E0631",
        (r"captured variable in an? `Fn", r"captured variable cannot escape"),
    ),
    _rule(
        "generics",
        "E0107 E0392 E0401 E0403 E0091",
        (r"cannot find type `[A-Z]` in this scope", r"generic parameters from outer item"),
    ),
    _rule("moves", "E0382 E0505 E0507 E0508 E0509"),
    _rule("borrows", "E0499 E0502 E0503 E0506 E0510"),
    _rule("mutability", "E0384 E0594 E0596"),
    _rule(
        "lifetimes",
        "E0106 E0261 E0262 E0263 E0310 E0495 E0515 E0597 E0621 E0623 E0700 E0716 E0759 E0803",
        (r"lifetime may not live long enough",),
    ),
    _rule(
        "type_mismatch",
        "E0308 E0604 E0605 E0606 E0607 E0610 E0620",
        (r"cannot be indexed by `", r"cannot [a-z-]+ `[iuf](8|16|32|64|128|size)` (to|from|by) `[iuf]"),
    ),
    _rule("traits", "E0038 E0277 E0369 E0599 E0600 E0608 E0614"),
    _rule(
        "unresolved",
        "E0405 E0412 E0422 E0423 E0424 E0425 E0426 E0432 E0433 E0434 E0531 E0532 E0574 E0583",
    ),
    _rule("privacy", "E0451 E0603 E0616 E0624"),
    _rule("arity", "E0057 E0060 E0061 E0069 E0593"),
    _rule(
        "trait_items",
        "E0046 E0049 E0050 E0053 E0117 E0119 E0185 E0186 E0195 E0201 E0323 E0324 E0325 E0407 E0437 E0438",
    ),
    _rule("fields", "E0026 E0027 E0062 E0063 E0559 E0560 E0609 E0615"),
    _rule("exhaustive", "E0004 E0005 E0023 E0029 E0164 E0408 E0416"),
    _rule("annotations", "E0282 E0283 E0284 E0790"),
)


#: Task groups: which adapter (Share task key) each rule's task trains and is served by. ``fine`` keeps one
#: adapter per rule (18 with the default rules); ``coarse`` pools them into three groups of about equal
#: data (ownership and borrowing; types and traits; names, items and patterns), so that a night's examples
#: and training steps are shared by three adapters instead of eighteen; ``pooled`` is one adapter for every
#: routed problem. A problem nothing explains (or explains too little of) still goes to the base model.
#: Measured reason (docs/learning.md, "Task groups"): with 18 fine tasks a night held 7-16 examples per
#: task and its training budget gave each task one step.
COARSE_GROUPS: Mapping[str, str] = {
    **dict.fromkeys(("moves", "borrows", "mutability", "lifetimes", "closures", "concurrency"), "ownership"),
    **dict.fromkeys(
        ("type_mismatch", "result_option", "annotations", "generics", "traits", "trait_items"), "types"
    ),
    **dict.fromkeys(("unresolved", "privacy", "fields", "exhaustive", "arity", "edition2024"), "items"),
}
POOLED_TASK = "all"
GROUPINGS: tuple[str, ...] = ("fine", "coarse", "pooled")


def task_groups(grouping: str, rules: Sequence[TaskRule] = DEFAULT_RULES) -> dict[str, str]:
    """rule task → group for one of :data:`GROUPINGS` (a rule missing from ``COARSE_GROUPS`` keeps its
    own name)."""
    if grouping == "fine":
        return {r.task: r.task for r in rules}
    if grouping == "coarse":
        return {r.task: COARSE_GROUPS.get(r.task, r.task) for r in rules}
    if grouping == "pooled":
        return {r.task: POOLED_TASK for r in rules}
    raise ValueError(f"unknown task grouping {grouping!r}: one of {', '.join(GROUPINGS)}")


@dataclass(frozen=True)
class RouteDecision:
    """The router's answer: a task key (None = base model), how much of the errors it explains, and why."""

    task: str | None
    confidence: float
    matched_codes: tuple[str, ...]
    reason: str


def error_diagnostics(diagnostics: Iterable[DiagnosticLike]) -> list[DiagnosticLike]:
    """The diagnostics that make compilation fail; notes, warnings and rustc's summary lines do not count."""
    return [
        d
        for d in diagnostics
        if d.level == "error"
        and not d.message.startswith("aborting due to")
        and not d.message.startswith("Some errors have detailed explanations")
    ]


class TaskRouter:
    """Routes a problem's diagnostics to one task when that task explains at least ``threshold`` of them.

    ``groups`` (rule task → group, e.g. :func:`task_groups`) makes the groups the tasks: a diagnostic is
    explained by a group when one of its rules explains it (counted once), ties go to the group of the
    earliest rule, and the decision names the group. None: every rule is its own task."""

    def __init__(
        self,
        rules: Sequence[TaskRule] = DEFAULT_RULES,
        threshold: float = 0.5,
        groups: Mapping[str, str] | None = None,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], not {threshold}")
        tasks = [r.task for r in rules]
        duplicates = sorted({t for t in tasks if tasks.count(t) > 1})
        if duplicates:
            raise ValueError(f"duplicate task rules: {', '.join(duplicates)}")
        groups = dict(groups) if groups is not None else {t: t for t in tasks}
        missing = [t for t in tasks if t not in groups]
        if missing:
            raise ValueError(f"tasks without a group: {', '.join(missing)}")
        for group in set(groups.values()):
            TaskRule(group)  # the same key rules as a task's
        self.rules: tuple[TaskRule, ...] = tuple(rules)
        self.threshold = threshold
        self.group_of: dict[str, str] = {t: groups[t] for t in tasks}
        self._rule_index: dict[str, int] = {t: i for i, t in enumerate(tasks)}

    @property
    def tasks(self) -> list[str]:
        """The task keys this router decides between (groups when grouped), in rule order."""
        return list(dict.fromkeys(self.group_of[r.task] for r in self.rules))

    def members(self, task: str) -> list[str]:
        """The rule tasks a task key (a group) stands for."""
        return [r.task for r in self.rules if self.group_of[r.task] == task]

    def explaining_rules(self, diagnostic: DiagnosticLike) -> list[str]:
        """Rule tasks that explain one diagnostic, most specific evidence first: a pattern matching the
        message, else a pattern matching the rendered text (its span labels say e.g. "expected
        `Option<..>`"), else the error code."""
        by_message = [r.task for r in self.rules if r.matches_message(diagnostic.message)]
        if by_message:
            return by_message
        rendered = getattr(diagnostic, "rendered", "") or ""
        by_rendered = [r.task for r in self.rules if rendered and r.matches_message(rendered)]
        if by_rendered:
            return by_rendered
        return [r.task for r in self.rules if r.matches_code(diagnostic.code)]

    def explaining_tasks(self, diagnostic: DiagnosticLike) -> list[str]:
        """Tasks (groups when grouped) that explain one diagnostic: the groups of its explaining rules."""
        return list(dict.fromkeys(self.group_of[t] for t in self.explaining_rules(diagnostic)))

    def route(self, diagnostics: Iterable[DiagnosticLike]) -> RouteDecision:
        errors = error_diagnostics(diagnostics)
        if not errors:
            return RouteDecision(None, 0.0, (), "no error diagnostics: base model")
        explained: Counter[str] = Counter()
        codes_of: dict[str, set[str]] = defaultdict(set)
        # a tie goes to the task of the earliest rule that explained one of these errors (grouped or not,
        # the group of the rule the fine router would pick)
        first_rule: dict[str, int] = {}
        for diag in errors:
            counted: set[str] = set()
            for rule in self.explaining_rules(diag):  # in rule order: a group's first is its earliest here
                task = self.group_of[rule]
                if task in counted:
                    continue
                counted.add(task)
                explained[task] += 1
                first_rule[task] = min(first_rule.get(task, len(self.rules)), self._rule_index[rule])
                if diag.code:
                    codes_of[task].add(diag.code)
        if not explained:
            codes = sorted({d.code for d in errors if d.code})
            return RouteDecision(
                None, 0.0, (), f"no task explains {', '.join(codes) or 'these errors'}: base"
            )
        task = min(explained, key=lambda t: (-explained[t], first_rule[t]))
        confidence = explained[task] / len(errors)
        matched = tuple(sorted(codes_of[task]))
        summary = f"{task} explains {explained[task]}/{len(errors)} errors"
        if confidence < self.threshold:
            return RouteDecision(None, confidence, matched, f"{summary}, below {self.threshold:.2f}: base")
        return RouteDecision(task, confidence, matched, summary)
