"""Proof that the koan library means what it says, and the rustfix baseline on its eval split.

A koan is only useful if its broken program fails with exactly the declared codes, its reference fix
compiles and passes its tests, and those tests actually pin behaviour — a fix that guts the logic must fail
them. The earlier prototype's koans broke all three; ``validate_koans`` checks each through the sandbox.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from agent.generators import normalize
from agent.koans import Koan
from agent.sandbox import Sandbox, Verdict
from agent.suggestions import fix_with_suggestions

STUB_BODY = "{ unimplemented!() }"


# ------------------------------------------------------------------------------------------ stubbing


def _skip_string(src: str, i: int) -> int:
    """Index just past the string literal starting at ``src[i]`` (a ``"`` or a raw-string ``r``)."""
    if src[i] == "r":
        j = i + 1
        hashes = 0
        while j < len(src) and src[j] == "#":
            hashes += 1
            j += 1
        end = src.find('"' + "#" * hashes, j + 1)
        return len(src) if end < 0 else end + 1 + hashes
    j = i + 1
    while j < len(src):
        if src[j] == "\\":
            j += 2
            continue
        if src[j] == '"':
            return j + 1
        j += 1
    return len(src)


def _code_mask(src: str) -> list[bool]:
    """True for each character that is code (not inside a comment, string or char literal)."""
    mask = [True] * len(src)
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        start = i
        if src.startswith("//", i):
            i = src.find("\n", i)
            i = n if i < 0 else i
        elif src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == '"' or (
            c in "rb"
            and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_"))
            and (src.startswith(('r"', "r#", 'br"', "br#", 'b"'), i))
        ):
            if c == "b":
                i += 1
            i = _skip_string(src, i)
        elif c == "'":
            if i + 1 < n and src[i + 1] == "\\":
                end = src.find("'", i + 2)
                i = n if end < 0 else end + 1
            elif i + 2 < n and src[i + 2] == "'":
                i += 3
            else:
                i += 1  # a lifetime
                continue
        else:
            i += 1
            continue
        for k in range(start, min(i, n)):
            mask[k] = False
    return mask


def _is_word_at(src: str, i: int, word: str) -> bool:
    end = i + len(word)
    before_ok = i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")
    after_ok = end >= len(src) or not (src[end].isalnum() or src[end] == "_")
    return src.startswith(word, i) and before_ok and after_ok


def stub_functions(source: str) -> str | None:
    """``source`` with the body of every function except ``main`` and ``#[test]`` functions replaced by
    ``unimplemented!()``; None when there is no such function. Tests that still pass against this do not
    pin the program's behaviour."""
    mask = _code_mask(source)
    out: list[str] = []
    last = 0
    stubbed = 0
    i = 0
    n = len(source)
    while i < n:
        if not (mask[i] and _is_word_at(source, i, "fn")):
            i += 1
            continue
        j = i + 2
        while j < n and source[j].isspace():
            j += 1
        name_end = j
        while name_end < n and (source[name_end].isalnum() or source[name_end] == "_"):
            name_end += 1
        name = source[j:name_end]
        if not name:  # `fn(i32) -> i32`, a function pointer type
            i += 2
            continue
        # The body starts at the first '{' outside parentheses/brackets; a ';' first means no body.
        depth, k = 0, name_end
        while k < n:
            if mask[k]:
                ch = source[k]
                if ch in "([":
                    depth += 1
                elif ch in ")]":
                    depth -= 1
                elif depth == 0 and ch in "{;":
                    break
            k += 1
        if k >= n or source[k] == ";":
            i = max(k, i + 2)
            continue
        braces, m = 0, k
        while m < n:
            if mask[m]:
                if source[m] == "{":
                    braces += 1
                elif source[m] == "}":
                    braces -= 1
                    if braces == 0:
                        break
            m += 1
        if m >= n:
            return None  # unbalanced: not a program we can stub safely
        preceding = source[max(0, i - 200) : i]
        is_test = "#[test]" in preceding.rsplit("}", 1)[-1].rsplit(";", 1)[-1]
        if name != "main" and not is_test:
            out.append(source[last:k])
            out.append(STUB_BODY)
            last = m + 1
            stubbed += 1
        i = m + 1
    if not stubbed:
        return None
    out.append(source[last:])
    return "".join(out)


# ------------------------------------------------------------------------------------------ validation


@dataclass
class KoanCheck:
    koan_id: str
    family: str
    split: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class FamilyRow:
    family: str
    train: int
    eval: int
    ok: int
    failed: int


def family_rows(checks: Sequence[KoanCheck]) -> list[FamilyRow]:
    rows = []
    for family in sorted({c.family for c in checks}):
        mine = [c for c in checks if c.family == family]
        rows.append(
            FamilyRow(
                family=family,
                train=sum(c.split == "train" for c in mine),
                eval=sum(c.split == "eval" for c in mine),
                ok=sum(c.ok for c in mine),
                failed=sum(not c.ok for c in mine),
            )
        )
    return rows


@dataclass
class ValidationReport:
    checks: list[KoanCheck]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[KoanCheck]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "families": [asdict(r) for r in family_rows(self.checks)],
            "koans": [asdict(c) for c in self.checks],
        }


def _excerpt(text: str, limit: int = 1500) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + " ..."


def validate_koan(sandbox: Sandbox, koan: Koan, stub_check: bool = True) -> KoanCheck:
    """Every rule of koans/README.md for one koan; each broken rule is one line in ``problems``."""
    start = time.perf_counter()
    problems: list[str] = []
    broken = sandbox.check(koan.broken, koan.mode, koan.edition)
    declared = sorted(set(koan.codes))
    if broken.ok:
        problems.append("the broken program compiles (and passes its own tests)")
    elif broken.verdict != Verdict.COMPILE_ERROR:
        problems.append(
            f"the broken program ends in {broken.verdict.value}, not a compile error: {broken.message}"
        )
    elif broken.error_codes != declared:
        problems.append(f"declared codes {declared} but rustc reports {broken.error_codes}")
    if normalize(koan.broken) == normalize(koan.fixed):
        problems.append("broken and fixed are the same program")
    fixed = sandbox.verify(koan.fixed, koan.mode, koan.edition, koan.tests)
    if not fixed.ok:
        detail = "".join(d.rendered for d in fixed.errors) or fixed.output or fixed.message
        problems.append(f"the reference fix fails ({fixed.verdict.value}): {_excerpt(detail)}")
    elif stub_check:
        stubbed = stub_functions(koan.fixed)
        if stubbed is not None and sandbox.verify(stubbed, koan.mode, koan.edition, koan.tests).ok:
            problems.append(
                "the tests still pass with every function body stubbed out: they pin no behaviour"
            )
    return KoanCheck(
        koan_id=koan.id,
        family=koan.family,
        split=koan.split,
        ok=not problems,
        problems=problems,
        seconds=time.perf_counter() - start,
    )


def validate_koans(
    sandbox: Sandbox,
    koans: Iterable[Koan],
    stub_check: bool = True,
    on_done: Callable[[KoanCheck], None] | None = None,
) -> ValidationReport:
    """``validate_koan`` for each koan, in parallel through the sandbox's pool; order kept. ``on_done`` is
    called with each check as it finishes (a progress bar)."""
    koan_list = list(koans)
    workers = max(1, min(sandbox.config.max_concurrency, len(koan_list)))

    def one(koan: Koan) -> KoanCheck:
        check = validate_koan(sandbox, koan, stub_check)
        if on_done is not None:
            on_done(check)
        return check

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="validate") as pool:
        checks = list(pool.map(one, koan_list))
    return ValidationReport(checks)


# ------------------------------------------------------------------------------------------ baseline


@dataclass
class BaselineRow:
    family: str
    koans: int
    fixed_machine_applicable: int
    fixed_with_maybe_incorrect: int

    @property
    def rate_machine_applicable(self) -> float:
        return self.fixed_machine_applicable / self.koans if self.koans else 0.0

    @property
    def rate_with_maybe_incorrect(self) -> float:
        return self.fixed_with_maybe_incorrect / self.koans if self.koans else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "rate_machine_applicable": round(self.rate_machine_applicable, 4),
            "rate_with_maybe_incorrect": round(self.rate_with_maybe_incorrect, 4),
        }


def rustfix_fixes(sandbox: Sandbox, koan: Koan, include_maybe_incorrect: bool) -> bool:
    """Whether applying rustc's own suggestions (up to 3 rounds) yields a program that passes the koan."""
    outcome = fix_with_suggestions(
        sandbox, koan.broken, koan.mode, koan.edition, include_maybe_incorrect=include_maybe_incorrect
    )
    if not outcome.result.ok:
        return False
    return sandbox.verify(outcome.source, koan.mode, koan.edition, koan.tests).ok


def rustfix_baseline(sandbox: Sandbox, koans: Iterable[Koan]) -> list[BaselineRow]:
    """Per family (plus a final "all" row): koans fixed by MachineApplicable suggestions alone, and with
    MaybeIncorrect ones too. Run it on the eval split."""
    koan_list = list(koans)
    jobs = [(k, flag) for k in koan_list for flag in (False, True)]
    workers = max(1, min(sandbox.config.max_concurrency, len(jobs)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="baseline") as pool:
        fixed = list(pool.map(lambda job: rustfix_fixes(sandbox, *job), jobs))
    outcome = {(k.id, flag): ok for (k, flag), ok in zip(jobs, fixed, strict=True)}
    rows = []
    for family in [*sorted({k.family for k in koan_list}), "all"]:
        mine = [k for k in koan_list if family in ("all", k.family)]
        rows.append(
            BaselineRow(
                family=family,
                koans=len(mine),
                fixed_machine_applicable=sum(outcome[(k.id, False)] for k in mine),
                fixed_with_maybe_incorrect=sum(outcome[(k.id, True)] for k in mine),
            )
        )
    return rows


# ------------------------------------------------------------------------------------------ the judge

_TEST_FN = re.compile(
    r"#\[test\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?fn\s+([A-Za-z_]\w*)"
)
_PLACEHOLDER = re.compile(r"\b(?:todo|unimplemented)!")
_TEST_LINE = re.compile(r"^test (\S+) \.\.\. (\w+)", re.MULTILINE)


def _code_only(source: str) -> str:
    """``source`` with comments and literals blanked out (same length), so names in them do not count."""
    mask = _code_mask(source)
    return "".join(c if keep or c == "\n" else " " for c, keep in zip(source, mask, strict=True))


def original_test_names(source: str) -> list[str]:
    """Names of the ``#[test]`` functions in ``source``, in order (comments and strings ignored)."""
    return _TEST_FN.findall(_code_only(source))


def placeholder_count(source: str) -> int:
    """How many ``todo!``/``unimplemented!`` calls the code (not its comments or strings) contains."""
    return len(_PLACEHOLDER.findall(_code_only(source)))


def judge_candidate(
    judge: Any, original: str, candidate: str, mode: str, edition: str = "2021", tests: str | None = None
) -> Any:
    """The fix judge, for serving, nights, the gate and training data alike: ``judge.verify`` (compiles,
    and passes ``tests`` when given) and, in ``test`` mode, every ``#[test]`` of ``original`` still exists
    by name in ``candidate``, ran and passed, and no ``todo!()``/``unimplemented!()`` was added. A failed
    rule turns the result into ``ok=False`` with the reason in ``message``; the diagnostics stay rustc's."""
    result = judge.verify(candidate, mode, edition, tests)
    if not getattr(result, "ok", False) or mode != "test":
        return result
    problems: list[str] = []
    wanted = original_test_names(original)
    present = set(original_test_names(candidate))
    missing = [n for n in wanted if n not in present]
    if missing:
        problems.append(f"the fix removed the original tests {', '.join(missing)}")
    added = placeholder_count(candidate) - placeholder_count(original)
    if added > 0:
        problems.append(f"the fix added {added} todo!()/unimplemented!() placeholder(s)")
    outcomes: dict[str, str] = {}
    for path, status in _TEST_LINE.findall(getattr(result, "output", "") or ""):
        outcomes[path.rsplit("::", 1)[-1]] = status
    not_passed = [n for n in wanted if n in present and outcomes.get(n) != "ok"]
    if not_passed:
        problems.append(f"the original tests {', '.join(not_passed)} did not run and pass")
    if not problems:
        return result
    return dataclasses.replace(result, ok=False, verdict=Verdict.TEST_FAILED, message="; ".join(problems))
