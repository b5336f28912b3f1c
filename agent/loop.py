"""The fix loop: model replies verified by the sandbox, with the compiler's feedback, until green.

Every round sends ALL still-open problems to the model in one batched ``generate`` call (rows of different
tasks in one batch: per-row routing makes that as cheap as one task), verifies every candidate through the
judge — it must compile AND pass the problem's tests — and feeds new diagnostics into the next prompt.

A reply that changes nothing, or leaves exactly the same errors, is a failed attempt that changes course:
hints on, the other output format, rustc's suggestions applied to the model's candidate, then sampling with
a fresh seed. The same prompt is never sent greedily twice for one problem (it would get the same answer).

Nothing here knows about torch or the service: the model is a ``generate(prompts, row_keys)`` callable, the
sandbox is a ``judge`` with ``verify``, and routing is a ``route(diagnostics) -> Route`` callable; a
generate row is named by its route's key, (task, version) or None for the base model, never a bank row.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from agent.diagnostics import Diagnostic, error_codes, signature
from agent.episodes import AttemptRecord, ProblemRecord
from agent.problems import Problem, judgeable_errors, unavailable_crates
from agent.prompt import Feedback, OutputFormat, build_messages, parse_reply, prompt_hash

if TYPE_CHECKING:
    from agent.sandbox import Sandbox

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_OUTPUT_FORMAT",
    "STRATEGIES",
    "FixLoop",
    "Problem",
    "Strategy",
]

Messages = list[dict[str, str]]


class GenerationLike(Protocol):
    """What the loop reads of one model reply (learner.runtime.Generation has these fields)."""

    @property
    def text(self) -> str: ...

    @property
    def prompt_tokens(self) -> int: ...

    @property
    def completion_tokens(self) -> int: ...

    @property
    def seconds(self) -> float: ...


@dataclass(frozen=True)
class JoinedReply:
    """A reply and its continuation, counted as one attempt (tokens and seconds summed)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float


#: Opens the code block when a reply that only explained the fix is continued.
CODE_OPENING = "\n\n```rust\n"

#: The verdict and final status of a problem whose prompt does not fit the model's context.
PROMPT_TOO_LONG = "prompt_too_long"

#: What one generate row runs with: the (task, version) of a served coefficient version; None = base model.
RowKey = tuple[str, int] | None
#: A prompt the model's context cannot hold makes it raise a ValueError with an int ``prompt_index`` (the
#: runtime's ``PromptTooLong``): the loop ends that problem with the verdict ``prompt_too_long``.
GenerateFn = Callable[[list[Messages], list[RowKey] | None], Sequence[GenerationLike]]
#: Like GenerateFn, but samples (temperature > 0) with the given seed; the service binds the parameters.
SampleFn = Callable[[list[Messages], list[RowKey] | None, int], Sequence[GenerationLike]]


class RouteLike(Protocol):
    """router.Route: the task (None = base), its served coefficient version (None = base), and the key a
    generate row runs with ((task, version), or None for the base model)."""

    @property
    def task(self) -> str | None: ...

    @property
    def version(self) -> int | None: ...

    @property
    def key(self) -> RowKey: ...


RouteFn = Callable[[Sequence[Diagnostic]], RouteLike]


class Judge(Protocol):
    """agent.sandbox.Sandbox: compiles the candidate in its mode/edition and runs the tests when given."""

    def verify(self, source: str, mode: str = ..., edition: str = ..., tests: str | None = ...) -> Any: ...


#: Applies rustc's suggested edits to a program (agent.suggestions.fix_with_suggestions, bound to a sandbox).
SuggestFn = Callable[[str, str, str], str]


@dataclass(frozen=True)
class Strategy:
    """How to attack a problem. ``max_attempts`` counts model attempts; the suggestion pass is extra."""

    name: str
    max_attempts: int = 4
    suggestions_first: bool = False
    hints: bool = False
    output_format: OutputFormat = "program"
    sample_on_stall: bool = True
    #: Verifier-guided search: from model round ``sample_from`` on (0 = the first), each open problem's
    #: prompt is sampled ``best_of`` times in one batched call (each row its own seed), every distinct
    #: candidate is verified, and the first that passes is taken (else the one with the fewest errors,
    #: which feeds the next round as usual). ``best_of <= 1``: one reply per round (greedy or a stall sample).
    best_of: int = 1
    sample_from: int = 1

    def __post_init__(self) -> None:
        if self.max_attempts < 0:
            raise ValueError("max_attempts must be >= 0")
        if self.best_of < 1 or self.best_of > 64:
            raise ValueError(f"best_of must be in 1..64, got {self.best_of}")
        if self.sample_from < 0:
            raise ValueError("sample_from must be >= 0")
        if self.output_format not in ("program", "edits"):
            raise ValueError(f"output_format must be 'program' or 'edits', not {self.output_format!r}")
        if self.max_attempts == 0 and not self.suggestions_first:
            raise ValueError(f"strategy {self.name!r} does nothing: no attempts and no suggestion pass")


#: The answer format the default model does better with (measured: docs/results.md).
DEFAULT_OUTPUT_FORMAT: OutputFormat = "program"

#: The strategies `dreamfix eval` compares.
STRATEGIES: dict[str, Strategy] = {
    "base": Strategy("base", max_attempts=1, sample_on_stall=False),
    "loop": Strategy("loop", max_attempts=4),
    "loop-suggest": Strategy("loop-suggest", max_attempts=4, suggestions_first=True),
    "loop-hints": Strategy("loop-hints", max_attempts=4, suggestions_first=True, hints=True),
    "rustfix": Strategy("rustfix", max_attempts=0, suggestions_first=True),
    "best-of-4": Strategy("best-of-4", max_attempts=2, suggestions_first=True, best_of=4),
    "best-of-8": Strategy("best-of-8", max_attempts=2, suggestions_first=True, best_of=8),
}


def _verdict_name(result: Any) -> str:
    verdict = getattr(result, "verdict", None)
    if verdict is None:
        return "ok" if result.ok else "compile_error"
    return str(getattr(verdict, "value", verdict))


def _test_output(result: Any) -> str:
    for name in ("test_output", "stdout", "output"):
        value = getattr(result, name, None)
        if isinstance(value, str) and value.strip():
            return value
    return str(getattr(result, "message", "") or "")


def unified_diff(before: str, after: str) -> str:
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), "a/src/main.rs", "b/src/main.rs"
    )
    return "".join(lines)


def _same_text(a: str, b: str) -> bool:
    return [line.rstrip() for line in a.strip().splitlines()] == [
        line.rstrip() for line in b.strip().splitlines()
    ]


def _error_shape(diagnostics: Sequence[Diagnostic]) -> tuple[str, tuple[tuple[str | None, str], ...]]:
    """Two views of "the same errors": code@line signature, and the line-free (code, message) multiset."""
    errors = [d for d in diagnostics if d.is_error]
    return signature(errors), tuple(
        sorted(((d.code, d.message) for d in errors), key=lambda e: (e[0] or "", e[1]))
    )


def _same_errors(a: Sequence[Diagnostic], b: Sequence[Diagnostic]) -> bool:
    sig_a, msgs_a = _error_shape(a)
    sig_b, msgs_b = _error_shape(b)
    return sig_a == sig_b or msgs_a == msgs_b


# rustc stops before borrow checking while type or name errors remain, so fixing those can REVEAL borrow
# errors: fewer errors is not the only kind of progress, reaching a later phase is too.
_BORROWCK_CODES = frozenset(
    [
        "E0373",
        "E0381",
        "E0382",
        "E0384",
        "E0499",
        "E0500",
        "E0501",
        "E0502",
        "E0503",
        "E0505",
        "E0506",
        "E0507",
        "E0508",
        "E0509",
        "E0510",
        "E0515",
        "E0521",
        "E0524",
        "E0594",
        "E0596",
        "E0597",
        "E0626",
        "E0712",
        "E0713",
        "E0716",
    ]
)


def _phase(errors: Sequence[Diagnostic]) -> int:
    """The earliest compiler phase still failing: 0 syntax, 1 names/types, 2 borrow checking, 3 none."""
    phases = []
    for d in errors:
        if d.code in _BORROWCK_CODES or "lifetime may not live long enough" in d.message:
            phases.append(2)
        elif d.code is None:
            phases.append(0)
        else:
            phases.append(1)
    return min(phases, default=3)


@dataclass
class _State:
    """The loop's working memory for one problem."""

    problem: Problem
    index: int
    working: str  # the program the next prompt asks to fix (the original, or a candidate that made progress)
    diagnostics: list[Diagnostic]  # the working program's diagnostics (what the prompt shows)
    verdict: str
    unavailable: list[str]  # crates the sandbox lacks: the problem cannot be verified
    original_codes: list[str]
    hints: bool
    output_format: OutputFormat
    attempts: list[AttemptRecord] = field(default_factory=list)
    feedback: Feedback | None = None
    stalls: int = 0
    suggest_candidate: bool = False
    sample_next: bool = False
    seen_prompts: set[str] = field(default_factory=set)
    model_rounds: int = 0
    done: bool = False
    fixed: bool = False
    final_code: str = ""
    final_status: str = "unfixed"
    steps_to_green: int | None = None
    route: RouteLike | None = None  # the route of the original diagnostics: the problem's route
    wall_seconds: float = 0.0

    @property
    def verified(self) -> bool:
        return not self.unavailable


@dataclass
class _Request:
    state: _State
    messages: Messages
    hash: str
    route: RouteLike
    sampled: bool
    seed: int | None


def replace_request(request: _Request, row: int) -> _Request:
    """Row ``row`` of a best-of-n fan-out: the same prompt and route, a distinct object (replies are keyed by
    identity) and its own seed (the runtime also offsets every row of a call from the call's seed)."""
    seed = (request.seed or 0) + row
    return _Request(request.state, request.messages, request.hash, request.route, True, seed)


class DeadlineStop:
    """A ``FixLoop.run`` ``should_stop`` for a request with a deadline (a ``clock()`` instant): stop when the
    deadline passed, when ``also()`` says so (the client went away), or when the next model round would not
    end before the deadline — a round is estimated as the longest one so far, measured between successive
    asks (``run`` asks before every round). The first round always runs (admission accepted the job for it).
    Stopping before a round that cannot finish answers on time with the attempts made, where running it
    would end in the 504 of a round cut at the deadline (bench_faults: a 2-attempt job under load)."""

    def __init__(
        self,
        deadline: float | None,
        also: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deadline = deadline
        self.also = also
        self.clock = clock
        self._last_ask: float | None = None
        self._longest_round = 0.0
        #: Why it said stop: "deadline", "no time for another round", "asked" (``also``); None while going on.
        self.reason: str | None = None

    def __call__(self) -> bool:
        now = self.clock()
        if self._last_ask is not None:
            self._longest_round = max(self._longest_round, now - self._last_ask)
        self._last_ask = now
        if self.also is not None and self.also():
            self.reason = "asked"
        elif self.deadline is not None and now >= self.deadline:
            self.reason = "deadline"
        elif self.deadline is not None and self._longest_round and now + self._longest_round > self.deadline:
            self.reason = "no time for another round"
        return self.reason is not None


class FixLoop:
    """Runs a :class:`Strategy` over many problems at once; returns one :class:`ProblemRecord` each."""

    def __init__(
        self,
        judge: Judge,
        generate: GenerateFn,
        route: RouteFn,
        model_id: str | None,
        *,
        sample: SampleFn | None = None,
        suggest: SuggestFn | None = None,
        check_workers: int = 2,
    ) -> None:
        self.judge = judge
        self.generate = generate
        self.route = route
        self.model_id = model_id
        self.sample = sample
        self.suggest = suggest if suggest is not None else self._default_suggest
        self.check_workers = max(1, check_workers)
        #: Called with every attempt as it is recorded (the service answers a late request with them).
        self.on_attempt: Callable[[AttemptRecord], None] | None = None

    # ----------------------------------------------------------------------------------------- plumbing

    def _default_suggest(self, source: str, mode: str, edition: str) -> str:
        """rustc's machine-applicable edits; if they do not make it compile, the maybe-incorrect ones too.
        Every candidate is verified afterwards, so a wrong suggestion costs one check, never a wrong answer."""
        from agent.suggestions import fix_with_suggestions

        sandbox = cast("Sandbox", self.judge)
        safe = fix_with_suggestions(sandbox, source, mode, edition, rounds=3)
        if safe.result.ok:
            return safe.source
        bold = fix_with_suggestions(sandbox, source, mode, edition, rounds=3, include_maybe_incorrect=True)
        if bold.result.ok or len(bold.result.errors) < len(safe.result.errors):
            return bold.source
        return safe.source

    def _verify_all(self, jobs: list[tuple[str, Problem]]) -> list[Any]:
        def one(job: tuple[str, Problem]) -> Any:
            source, problem = job
            from agent.validation import judge_candidate

            return judge_candidate(
                self.judge, problem.source, source, problem.mode, problem.edition, problem.tests
            )

        if len(jobs) <= 1:
            return [one(j) for j in jobs]
        with ThreadPoolExecutor(max_workers=self.check_workers) as pool:
            return list(pool.map(one, jobs))

    # ------------------------------------------------------------------------------------------- the run

    def run(
        self,
        problems: Sequence[Problem],
        strategy: Strategy,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[ProblemRecord]:
        """``should_stop`` (the service's deadline / client-gone check) is asked before every model round:
        when it says stop, the open problems close with the attempts made so far."""
        t0 = time.monotonic()
        ids = [p.id for p in problems]
        if len(set(ids)) != len(ids):
            raise ValueError("problem ids must be unique within one run")
        states = self._start(problems, strategy, t0)
        if strategy.suggestions_first:
            self._suggestion_pass([s for s in states if not s.done], t0)
        for _ in range(strategy.max_attempts):
            open_states = [s for s in states if not s.done]
            if not open_states or (should_stop is not None and should_stop()):
                break
            self._model_round(open_states, strategy, t0)
        for state in states:
            if not state.done:
                self._close(state, t0, status="unverified" if not state.verified else "unfixed")
        return [self._record(s, strategy) for s in states]

    def _start(self, problems: Sequence[Problem], strategy: Strategy, t0: float) -> list[_State]:
        results = self._verify_all([(p.source, p) for p in problems])
        states = []
        for index, (problem, result) in enumerate(zip(problems, results, strict=True)):
            diagnostics = list(result.diagnostics)
            verdict = _verdict_name(result)
            unavailable = (
                unavailable_crates(diagnostics, problem.source) if verdict == "compile_error" else []
            )
            if unavailable and problem.client_diagnostics:
                diagnostics = list(problem.client_diagnostics)  # the client's compiler had the crates
            state = _State(
                problem=problem,
                index=index,
                working=problem.source,
                diagnostics=diagnostics,
                verdict=verdict,
                unavailable=unavailable,
                original_codes=error_codes(diagnostics),
                hints=strategy.hints,
                output_format=strategy.output_format,
                final_code=problem.source,
                route=self.route(diagnostics),
            )
            if result.ok:
                state.fixed, state.steps_to_green = True, 0
                self._close(state, t0, status="already_ok")
            elif verdict not in ("compile_error", "test_failed"):
                self._close(state, t0, status=verdict)  # invalid input, timeout, ...: nothing to repair
            elif verdict == "test_failed":
                state.feedback = Feedback(
                    "the program compiles but its tests fail", None, (), _test_output(result)
                )
            states.append(state)
        return states

    def _close(self, state: _State, t0: float, *, status: str) -> None:
        state.done = True
        state.final_status = status
        state.wall_seconds = time.monotonic() - t0

    def _is_green(self, state: _State, result: Any) -> bool:
        """Verified problems: the judge's ok. Unverifiable ones: no errors left but the missing crates'."""
        if result.ok or state.verified:
            return bool(result.ok)
        return _verdict_name(result) == "compile_error" and not judgeable_errors(
            result.diagnostics, state.problem.source
        )

    # ------------------------------------------------------------------------------- suggestion pass

    def _suggestion_pass(self, states: list[_State], t0: float) -> None:
        """rustc's own suggested edits first: free, and sometimes all a problem needs."""
        todo = []
        for state in states:
            if not state.verified or state.verdict != "compile_error":
                continue
            start = time.monotonic()
            candidate = self.suggest(state.working, state.problem.mode, state.problem.edition)
            if not _same_text(candidate, state.working):
                todo.append((state, candidate, time.monotonic() - start))
        results = self._verify_all([(candidate, state.problem) for state, candidate, _ in todo])
        for (state, candidate, spent), result in zip(todo, results, strict=True):
            self._take_result(
                state,
                candidate,
                result,
                strategy="suggestions",
                reply="",
                route=None,
                request_hash=None,
                generation=None,
                extra_check_seconds=spent,
                t0=t0,
            )

    # ----------------------------------------------------------------------------------- model rounds

    def _prompt_for(self, state: _State, strategy: Strategy) -> _Request | None:
        """The next request for a problem; escalates the course until the prompt is one not yet sent."""
        route = self.route(state.diagnostics)
        for _ in range(4):
            messages = build_messages(
                state.working,
                state.diagnostics,
                hints=state.hints,
                output_format=state.output_format,
                feedback=state.feedback,
            )
            digest = prompt_hash(messages)
            sampled = state.sample_next and self.sample is not None and strategy.sample_on_stall
            if sampled or digest not in state.seen_prompts:
                seed = None
                if sampled:
                    seed = int(
                        hashlib.sha256(f"{state.problem.id}:{len(state.attempts)}".encode()).hexdigest()[:8],
                        16,
                    )
                return _Request(state, messages, digest, route, sampled, seed)
            # This exact prompt was sent before and greedy decoding would answer it the same way.
            if not state.hints:
                state.hints = True
            elif strategy.sample_on_stall and self.sample is not None:
                state.sample_next = True
            else:
                state.output_format = "edits" if state.output_format == "program" else "program"
        return None

    def _model_round(self, states: list[_State], strategy: Strategy, t0: float) -> None:
        requests: list[_Request] = []
        fanned: list[_Request] = []
        for state in states:
            search = (
                strategy.best_of > 1
                and self.sample is not None
                and state.model_rounds >= strategy.sample_from
            )
            state.model_rounds += 1
            if search:
                state.sample_next = True  # the prompt may repeat: sampled replies differ
            request = self._prompt_for(state, strategy)
            if request is None:
                self._close(state, t0, status="exhausted" if state.verified else "unverified")
                continue
            state.seen_prompts.add(request.hash)
            (fanned if search else requests).append(request)
        if fanned:
            self._search_round(fanned, strategy, t0)
        if not requests:
            return
        greedy = [r for r in requests if not r.sampled]
        sampled = [r for r in requests if r.sampled]
        replies: dict[int, GenerationLike] = {}
        if greedy:
            replies.update(self._generate_fitting(greedy, self.generate, t0))
        if sampled and self.sample is not None:
            # One seed per call: the runtime seeds the whole batch; rows still differ by their prompts.
            seed = min(r.seed or 0 for r in sampled)
            sample = self.sample
            replies.update(self._generate_fitting(sampled, lambda ps, rows: sample(ps, rows, seed), t0))
        requests = [r for r in requests if id(r) in replies]

        parsed = self._ask_for_code(requests, replies)
        candidates = [(r, replies[id(r)], parsed[id(r)]) for r in requests]

        to_check = [
            (c, r.state.problem)
            for r, _, c in candidates
            if c is not None and not _same_text(c, r.state.working)
        ]
        results = iter(self._verify_all(to_check))
        for request, generation, candidate in candidates:
            state = request.state
            label = "model+hints" if state.hints else "model"
            if state.output_format == "edits":
                label += "+edits"
            if request.sampled:
                label += "+sampled"
            if candidate is None or _same_text(candidate, state.working):
                note = "no code in the reply" if candidate is None else "unchanged reply"
                self._failed_without_check(state, candidate, generation, request, label, note)
                continue
            self._take_result(
                state,
                candidate,
                next(results),
                strategy=label,
                reply=generation.text,
                route=request.route,
                request_hash=request.hash,
                generation=generation,
                extra_check_seconds=0.0,
                t0=t0,
            )

    def _search_round(self, requests: list[_Request], strategy: Strategy, t0: float) -> None:
        """Best-of-n: ``strategy.best_of`` sampled rows per request in one call, all verified in parallel."""
        assert self.sample is not None
        n = strategy.best_of
        rows = [replace_request(r, i) for r in requests for i in range(n)]
        seed = min(r.seed or 0 for r in requests)
        sample = self.sample
        replies = self._generate_fitting(rows, lambda ps, tasks: sample(ps, tasks, seed), t0)
        requests = [r for r in requests if not r.state.done]
        rows = [r for r in rows if id(r) in replies]
        parsed = self._ask_for_code(rows, replies)
        # Each problem's distinct changed candidates, in row order (the first row that wrote one stands for it),
        # verified once each, all problems in one parallel batch.
        groups = [rows[k * n : (k + 1) * n] for k in range(len(requests))]
        firsts: list[dict[str, _Request]] = []
        for group in groups:
            first_of: dict[str, _Request] = {}
            for r in group:
                c = parsed[id(r)]
                if c is not None and not _same_text(c, r.state.working):
                    first_of.setdefault(c, r)
            firsts.append(first_of)
        results = iter(self._verify_all([(c, r.state.problem) for f in firsts for c, r in f.items()]))
        for request, group, first_of in zip(requests, groups, firsts, strict=True):
            state = request.state
            state.sample_next = False
            checked = [(r, c, next(results)) for c, r in first_of.items()]
            passing = [x for x in checked if self._is_green(state, x[2])]
            label = f"model+best-of-{n}" + ("+hints" if state.hints else "")
            if not checked:
                first = group[0]
                note = (
                    "no code in any reply"
                    if all(parsed[id(r)] is None for r in group)
                    else "unchanged replies"
                )
                self._failed_without_check(state, parsed[id(first)], replies[id(first)], first, label, note)
                continue
            if passing:
                chosen = passing[0]
            else:
                chosen = min(checked, key=lambda x: len(judgeable_errors(x[2].diagnostics, x[1])))
            r, candidate, result = chosen
            gen = replies[id(r)]
            self._take_result(
                state,
                candidate,
                result,
                strategy=f"{label} ({len(passing)}/{len(checked)} distinct passed)",
                reply=gen.text,
                route=r.route,
                request_hash=r.hash,
                generation=gen,
                extra_check_seconds=sum(
                    float(getattr(x[2], "duration_s", 0.0)) for x in checked if x is not chosen
                ),
                t0=t0,
            )

    def _ask_for_code(
        self, requests: list[_Request], replies: dict[int, GenerationLike]
    ) -> dict[int, str | None]:
        """Continue, within the same attempt, every reply that holds no program: its own text plus an opened
        ```rust fence become the start of the assistant's turn. The small model often states the cause and
        the fix in a sentence and stops there (docs/results.md); the continuation asks for the code. A reply
        the request's deadline cut (``stopped_by == "deadline"``) is not continued: that would run past it.

        Returns each request's candidate program (None: no code even after the continuation), keyed by
        ``id(request)``; every final reply is parsed exactly once."""
        parsed: dict[int, str | None] = {}
        pending = []
        for r in requests:
            text = replies[id(r)].text
            parsed[id(r)] = parse_reply(text, r.state.working, r.state.output_format)
            cut = getattr(replies[id(r)], "stopped_by", None) == "deadline"
            if "```" not in text and parsed[id(r)] is None and not cut:
                pending.append(r)
        if not pending:
            return parsed
        prompts = {
            id(r): [
                *r.messages,
                {"role": "assistant", "content": replies[id(r)].text.rstrip() + CODE_OPENING},
            ]
            for r in pending
        }
        # A continuation that outgrows the context is left out: its reply stays one without code.
        outs = self._generate_fitting(pending, self.generate, None, prompts)
        for request in pending:
            out = outs.get(id(request))
            if out is None:
                continue
            first = replies[id(request)]
            replies[id(request)] = JoinedReply(
                text=first.text.rstrip() + CODE_OPENING + out.text,
                prompt_tokens=first.prompt_tokens + out.prompt_tokens,
                completion_tokens=first.completion_tokens + out.completion_tokens,
                seconds=first.seconds + out.seconds,
            )
            state = request.state
            parsed[id(request)] = parse_reply(replies[id(request)].text, state.working, state.output_format)
        return parsed

    def _generate_fitting(
        self,
        requests: list[_Request],
        call: GenerateFn,
        t0: float | None,
        prompts: dict[int, Messages] | None = None,
    ) -> dict[int, GenerationLike]:
        """``call`` on the requests' prompts (or ``prompts``, keyed by ``id(request)``), keyed by request.

        A prompt the model's context cannot hold (a ValueError with ``prompt_index``, see ``GenerateFn``)
        takes its problem's every row out, and the rest are asked again. With ``t0`` such a problem ends
        with the verdict ``prompt_too_long``; without, its rows are only left out of the answer."""
        rows = list(requests)
        while rows:
            try:
                outs = call(
                    [prompts[id(r)] if prompts else r.messages for r in rows], [r.route.key for r in rows]
                )
            except ValueError as exc:
                index = getattr(exc, "prompt_index", None)
                if not isinstance(index, int) or not 0 <= index < len(rows):
                    raise
                state = rows[index].state
                rows = [r for r in rows if r.state is not state]
                if t0 is not None:
                    self._too_long(state, str(exc), t0)
                continue
            self._check_count(outs, rows)
            return {id(r): g for r, g in zip(rows, outs, strict=True)}
        return {}

    def _too_long(self, state: _State, reason: str, t0: float) -> None:
        """End a problem whose next prompt does not fit the model: one attempt that says so, no check."""
        log.info("problem %s: %s", state.problem.id, reason)
        self._attempt(
            state,
            strategy="model",
            candidate=state.working,
            verdict=PROMPT_TOO_LONG,
            after=state.diagnostics,
            fixed=False,
            reply="",
            route=state.route,
            request_hash=None,
            generation=None,
            check_seconds=0.0,
            note=f"the problem does not fit the model: {reason}",
        )
        self._close(state, t0, status=PROMPT_TOO_LONG)

    @staticmethod
    def _check_count(outs: Sequence[GenerationLike], requests: list[_Request]) -> None:
        if len(outs) != len(requests):
            raise RuntimeError(f"generate returned {len(outs)} replies for {len(requests)} prompts")

    # -------------------------------------------------------------------------------- attempt outcomes

    def _attempt(
        self,
        state: _State,
        *,
        strategy: str,
        candidate: str,
        verdict: str,
        after: Sequence[Diagnostic],
        fixed: bool,
        reply: str,
        route: RouteLike | None,
        request_hash: str | None,
        generation: GenerationLike | None,
        check_seconds: float,
        note: str,
    ) -> AttemptRecord:
        record = AttemptRecord(
            problem_id=state.problem.id,
            content_hash=state.problem.content_hash,
            attempt=len(state.attempts),
            strategy=strategy,
            route_task=route.task if route is not None else None,
            route_version=route.version if route is not None else None,
            prompt_hash=request_hash,
            model_id=self.model_id if generation is not None else None,
            error_codes_before=error_codes(state.diagnostics),
            error_codes_after=error_codes(after),
            diff=unified_diff(state.working, candidate),
            verdict=verdict,
            fixed=fixed,
            candidate=candidate,
            reply=reply,
            prompt_tokens=int(generation.prompt_tokens) if generation is not None else 0,
            completion_tokens=int(generation.completion_tokens) if generation is not None else 0,
            generate_seconds=float(generation.seconds) if generation is not None else 0.0,
            check_seconds=check_seconds,
            note=note,
        )
        state.attempts.append(record)
        if self.on_attempt is not None:
            self.on_attempt(record)
        return record

    def _stall(self, state: _State) -> None:
        """No progress: change course for the next round (hints, suggestions on the candidate, format, sampling)."""
        state.stalls += 1
        state.suggest_candidate = True
        if not state.hints:
            state.hints = True
        elif state.stalls >= 2:
            state.output_format = "edits" if state.output_format == "program" else "program"
        if state.stalls >= 2:
            state.sample_next = True

    def _failed_without_check(
        self,
        state: _State,
        candidate: str | None,
        generation: GenerationLike,
        request: _Request,
        label: str,
        note: str,
    ) -> None:
        # Unchanged: the candidate IS the working program, whose verdict and errors we already know.
        self._attempt(
            state,
            strategy=label,
            candidate=candidate if candidate is not None else state.working,
            verdict=state.verdict if candidate is not None else "no_candidate",
            after=state.diagnostics,
            fixed=False,
            reply=generation.text,
            route=request.route,
            request_hash=request.hash,
            generation=generation,
            check_seconds=0.0,
            note=note,
        )
        state.feedback = Feedback(
            "the reply changed nothing" if candidate is not None else "the reply contained no program",
            None,
            state.diagnostics,
        )
        self._stall(state)

    def _take_result(
        self,
        state: _State,
        candidate: str,
        result: Any,
        *,
        strategy: str,
        reply: str,
        route: RouteLike | None,
        request_hash: str | None,
        generation: GenerationLike | None,
        extra_check_seconds: float,
        t0: float,
    ) -> None:
        check_seconds = float(getattr(result, "duration_s", 0.0)) + extra_check_seconds
        verdict = _verdict_name(result)
        # After a stall, rustc's suggestions are applied to the model's candidate as well.
        if (
            generation is not None
            and state.suggest_candidate
            and state.verified
            and verdict == "compile_error"
        ):
            start = time.monotonic()
            polished = self.suggest(candidate, state.problem.mode, state.problem.edition)
            if not _same_text(polished, candidate):
                polished_result = self._verify_all([(polished, state.problem)])[0]
                check_seconds += time.monotonic() - start
                if polished_result.ok or len(judgeable_errors(polished_result.diagnostics, polished)) < len(
                    judgeable_errors(result.diagnostics, candidate)
                ):
                    candidate, result, verdict = polished, polished_result, _verdict_name(polished_result)
                    strategy += "+suggestions"
        after = list(result.diagnostics)
        green = self._is_green(state, result)
        if green:
            note = "" if state.verified else f"unverified: needs {', '.join(state.unavailable)}"
            self._attempt(
                state,
                strategy=strategy,
                candidate=candidate,
                verdict=verdict,
                after=after,
                fixed=True,
                reply=reply,
                route=route,
                request_hash=request_hash,
                generation=generation,
                check_seconds=check_seconds,
                note=note,
            )
            state.fixed = True
            state.final_code = candidate
            state.steps_to_green = len(state.attempts)
            self._close(state, t0, status="fixed" if state.verified else "unverified")
            return

        if not state.verified:
            # Only the program's own errors are comparable: the sandbox lacks the crates the client has.
            note, progress = "errors remain (cannot verify: crates unavailable)", False
        elif verdict == "compile_error" and _same_errors(after, state.diagnostics):
            note, progress = "no progress: the same errors remain", False
        elif verdict == "compile_error":
            before_errors = judgeable_errors(state.diagnostics, state.working)
            after_errors = judgeable_errors(after, candidate)
            if _phase(after_errors) > _phase(before_errors):
                note, progress = "progress: only later-phase (borrow checker) errors remain", True
            elif _phase(after_errors) == _phase(before_errors) and len(after_errors) < len(before_errors):
                note, progress = "progress: fewer errors", True
            else:
                note, progress = "other errors", False
        elif verdict == "test_failed":
            note, progress = "compiles, but the tests fail", False
        else:
            note, progress = f"candidate rejected: {verdict}", False
        self._attempt(
            state,
            strategy=strategy,
            candidate=candidate,
            verdict=verdict,
            after=after,
            fixed=False,
            reply=reply,
            route=route,
            request_hash=request_hash,
            generation=generation,
            check_seconds=check_seconds,
            note=note,
        )
        if progress:
            # Keep the better program; the next prompt shows it with its own (fewer) errors.
            state.working, state.diagnostics, state.verdict = candidate, after, verdict
            state.final_code = candidate
            state.feedback = None
            return
        if not state.verified:
            state.feedback = Feedback(
                "rustc still reports errors", candidate, judgeable_errors(after, state.problem.source)
            )
        elif note.startswith("no progress"):
            state.feedback = Feedback("the same errors remain after its change", candidate, after)
            self._stall(state)
        elif verdict == "test_failed":
            state.feedback = Feedback(
                "it compiled but changed what the program does", candidate, (), _test_output(result)
            )
        elif verdict == "compile_error":
            state.feedback = Feedback("its change caused other errors", candidate, after)
        else:
            state.feedback = Feedback(f"the candidate was rejected ({verdict})", candidate, after)

    # ------------------------------------------------------------------------------------------ record

    def _record(self, state: _State, strategy: Strategy) -> ProblemRecord:
        problem = state.problem
        return ProblemRecord(
            problem_id=problem.id,
            content_hash=problem.content_hash,
            family=problem.family,
            source=problem.source,
            final_code=state.final_code,
            fixed=state.fixed,
            verified=state.verified,
            steps_to_green=state.steps_to_green,
            final_status=state.final_status,
            strategy=strategy.name,
            error_codes=state.original_codes,
            attempts=state.attempts,
            wall_seconds=state.wall_seconds,
            route_task=state.route.task if state.route is not None else None,
            route_version=state.route.version if state.route is not None else None,
        )
