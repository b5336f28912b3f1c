"""The live side of the daemon: the model, its Share bank, the router, and the fix loop for requests.

Hot-swap. Promotions and rollbacks are rows in SQL plus a bumped ``route_state.epoch``; every replica polls
the epoch and, when it moved, loads the active versions into its bank. The bank replaces one snapshot
reference per change (bases included, so a Phase 3 merge is as atomic as one task's swap), and each request
pins ONE snapshot for its whole fix loop: its routes (row index and version) and every forward of every
round read that snapshot. A request therefore runs entirely on the old versions or entirely on the new
ones, in-flight requests never fail, and the next request after a swap sees the new version.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException

from agent.diagnostics import error_codes, parse_client_output
from agent.loop import PROMPT_TOO_LONG, DeadlineStop, FixLoop, Strategy
from agent.problems import Problem
from agent.sandbox import Sandbox
from service.compose import build_fix_loop, serving_strategy
from service.db.artifacts import ArtifactIntegrityError
from service.db.repositories import (
    AdapterRepository,
    BasisRepository,
    EpisodeRepository,
    RouteStateRepository,
)
from service.db.session import Database
from service.settings import Settings

if TYPE_CHECKING:
    from agent.episodes import AttemptRecord, ProblemRecord
    from learner.runtime import ModelRuntime
    from learner.share.bank import BankSnapshot, ShareBank, Version
    from service.api.schemas import AttemptOut, CheckRequest, FixRequest, FixResponse

log = logging.getLogger(__name__)


class FixProgress:
    """What a fix job has produced so far, readable from another thread while it runs: every attempt as the
    loop records it, and the episode id once the episode is saved. The API answers a request that outlives
    its deadline with it (a 504 carrying the attempts made so far)."""

    def __init__(self) -> None:
        self.attempts: list[AttemptRecord] = []
        self.episode_id: int | None = None

    def attempts_out(self) -> list[dict[str, Any]]:
        """The attempts so far, as ``FixResponse.attempts`` lists them."""
        return [attempt_out(a).model_dump() for a in list(self.attempts)]


class ServingRuntime:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        sandbox: Sandbox,
        runtime_factory: Callable[[], ModelRuntime],
    ) -> None:
        self.settings = settings
        self.db = db
        self.sandbox = sandbox
        self.router = settings.router.task_router()
        self._factory = runtime_factory
        self.runtime: ModelRuntime | None = None
        self.bank: ShareBank | None = None
        #: More copies of the model for more model workers (``limits.model_workers``), all attached to the one
        #: bank; ``_free`` holds the indices of the copies no request is using (0: ``runtime``).
        self.replicas: list[ModelRuntime] = []
        self._free: queue.Queue[int] = queue.Queue()
        self._pooled = False
        self.model_error: str | None = None
        self.epoch = -1
        self._sync_lock = threading.Lock()
        #: The last epoch whose artifacts were refused (hash mismatch, damaged file) and why; None when fine.
        self.refused_epoch: int | None = None
        self.sync_error: str | None = None
        self.on_swap: Callable[[dict[str, int]], None] | None = None
        self._loading = False  # inside load(): the runtime is set, its first sync not yet done

    # ------------------------------------------------------------------ lifecycle
    @property
    def model_ready(self) -> bool:
        """Loaded and its active versions installed: ``load`` publishes the runtime before its first ``sync``
        (which needs it), so until that sync ends a request would have met the base model (``_loading``)."""
        return self.runtime is not None and not self._loading

    def load(self) -> None:
        """Load the model (minutes for a cold default model) and the active versions."""
        self._loading = True
        try:
            started = time.monotonic()
            primary = self._factory()
            self.replicas = [self._factory() for _ in range(1, self.settings.limits.model_workers)]
            for index in range(1 + len(self.replicas)):
                self._free.put(index)
            self._pooled = True
            self.runtime = primary
            log.info(
                "model %s loaded in %.1fs (%d cop%s)",
                primary.model_id,
                time.monotonic() - started,
                1 + len(self.replicas),
                "y" if not self.replicas else "ies",
            )
            self.sync()
        except Exception as exc:
            self.model_error = f"model failed to load: {exc}"
            log.exception("model failed to load")
        finally:
            self._loading = False

    def sync(self) -> bool:
        """Install the database's active versions if the route epoch moved. Returns True when it swapped."""
        from learner.share.artifacts import ArtifactError

        if self.runtime is None:
            return False
        with self._sync_lock, self.db.session() as s:
            state = RouteStateRepository(s).get()
            if state.epoch == self.epoch:
                return False
            active = list(AdapterRepository(s).active())
            basis_row = BasisRepository(s).get(state.basis_id) if state.basis_id else None
            try:
                self._install(active, basis_row)
            except (ArtifactError, ArtifactIntegrityError) as exc:
                # Nothing was swapped: the bank keeps serving the previous versions; retried next poll.
                if self.refused_epoch != state.epoch:
                    log.error(
                        "route epoch %d refused, still serving the previous versions: %s", state.epoch, exc
                    )
                self.refused_epoch, self.sync_error = state.epoch, str(exc)
                return False
            self.epoch, self.sync_error = state.epoch, None
        versions = self.active_versions()
        log.info("route epoch %d: serving %s", self.epoch, versions or "the base model only")
        if self.on_swap is not None:
            self.on_swap(versions)
        return True

    def _install(self, active: Sequence[Any], basis_row: Any) -> None:
        """Say what the bank should serve: the active versions that live in the active basis. The bank
        reconciles itself to that in one swap (``ShareBank.reconcile``). Artifacts come from the database,
        sha256-checked (``service.db.artifacts.local_artifact``)."""
        from learner.share.artifacts import load_bases
        from service.db.artifacts import local_artifact

        assert self.runtime is not None
        if basis_row is None:
            if self.bank is not None:  # everything rolled back: drop every task, keep the layers
                self.bank.reconcile({})
            return
        if not active and self.bank is None:
            return  # nothing to serve and no Share layers yet: the plain base model
        cache = self.settings.adapters_dir / "db-cache"
        basis = load_bases(local_artifact(basis_row, cache, f"basis {basis_row.id}"))
        stale = [f"{row.task}@v{row.version}" for row in active if row.basis_id != basis.basis_id]
        if stale:
            log.warning("active versions in another basis are not served: %s", stale)
        desired = {
            row.task: self._desired(row, basis.basis_id) for row in active if row.basis_id == basis.basis_id
        }
        if self.bank is None:
            from learner.share.layer import attach_share

            model_id = self.runtime.model_id
            self.bank = attach_share(self.runtime.model, basis.bases, base_model_id=model_id)
            self.runtime.bank = self.bank
            for replica in self.replicas:  # every copy reads the same bank: one swap serves them all
                attach_share(replica.model, basis.bases, base_model_id=model_id, bank=self.bank)
                replica.bank = self.bank
        self.bank.reconcile(desired, basis.bases)

    def _desired(self, row: Any, basis_id: str) -> Version:
        """An active version row as the bank's desired entry; its artifact is read only if the bank needs it
        (inside ``sync``'s session: the row's bytes load on demand)."""
        from learner.share.artifacts import load_task_version
        from learner.share.bank import Version
        from service.db.artifacts import local_artifact

        model_id = self.runtime.model_id if self.runtime is not None else None
        cache, name = self.settings.adapters_dir / "db-cache", f"{row.task}@v{row.version}"

        def load() -> Any:
            path = local_artifact(row, cache, name)
            return load_task_version(path, expect_basis_id=basis_id, expect_base_model_id=model_id).coeffs

        return Version(row.version, load)

    def active_versions(self) -> dict[str, int]:
        if self.bank is None:
            return {}
        return dict(self.bank.snapshot().versions)

    # ------------------------------------------------------------------ requests
    def make_loop(
        self, snapshot: BankSnapshot | None, deadline: float | None = None, prompt_lookup: bool | None = None
    ) -> FixLoop:
        assert self.runtime is not None
        return build_fix_loop(
            self.runtime,
            self.settings,
            self.sandbox,
            snapshot=snapshot,
            router=self.router,
            deadline=deadline,
            prompt_lookup=prompt_lookup,
        )

    def pinned_snapshot(self) -> BankSnapshot | None:
        return self.bank.snapshot() if self.bank is not None else None

    @contextmanager
    def _model_copy(self) -> Iterator[ModelRuntime]:
        """A copy of the model no other request is using, for the length of one request (waits for one)."""
        assert self.runtime is not None
        if not self._pooled:  # a runtime set from outside (the night's shadow): the one copy
            yield self.runtime
            return
        index = self._free.get()
        try:
            yield self.runtime if index == 0 else self.replicas[index - 1]
        finally:
            self._free.put(index)

    def fix(
        self,
        req: FixRequest,
        deadline: float | None = None,
        should_stop: Callable[[], bool] | None = None,
        progress: FixProgress | None = None,
    ) -> dict[str, Any]:
        """Run the fix loop on one client request (in a worker thread) and persist its episode.
        ``deadline`` (a ``time.monotonic()`` instant) stops decoding and further rounds, and a round that
        would not end before it is not started (``agent.loop.DeadlineStop``); ``should_stop``
        (the client went away) stops further rounds. Either way the attempts so far are kept. ``progress``
        receives each attempt as it is made and the episode id once it is saved."""
        if self.runtime is None:
            raise RuntimeError("model not loaded")

        # Stops at the deadline, when the client goes away, or before a round that could not end in time.
        stop = DeadlineStop(deadline, should_stop)
        problem = self._problem(req)
        strategy = serving_strategy(self.settings, req.max_attempts, req.hints)
        with self._model_copy() as runtime:
            snapshot = self.pinned_snapshot()
            loop = build_fix_loop(
                runtime, self.settings, self.sandbox, snapshot=snapshot, router=self.router, deadline=deadline
            )
            if progress is not None:
                loop.on_attempt = progress.attempts.append
            record = loop.run([problem], strategy, should_stop=stop)[0]
        answer = self._answer(req, problem, record)
        if progress is not None:
            progress.episode_id = answer["episode_id"]
        if record.final_status == PROMPT_TOO_LONG and not any(a.model_id for a in record.attempts):
            # The model never saw it: the problem itself is too large for the model (the episode is kept).
            note = record.attempts[-1].note if record.attempts else "the problem does not fit the model"
            raise HTTPException(413, f"{note} (episode {answer['episode_id']})")
        return answer

    def fix_without_model(self, req: FixRequest) -> dict[str, Any] | None:
        """The fast lane: the check and rustc's suggestion pass, no model. The answer when that settles the
        request (already compiles, fixed by suggestions, or nothing to repair); None when it needs the model."""
        if not self.settings.agent.suggestions_first:
            return None
        problem = self._problem(req)
        strategy = Strategy("serve-suggestions", max_attempts=0, suggestions_first=True)
        loop = build_fix_loop(
            None, self.settings, self.sandbox, snapshot=self.pinned_snapshot(), router=self.router
        )
        record = loop.run([problem], strategy)[0]
        if not record.fixed and record.final_status in ("unfixed", "unverified"):
            return None
        return self._answer(req, problem, record)

    def _problem(self, req: FixRequest) -> Problem:
        client_diags = parse_client_output(req.diagnostics) if req.diagnostics else None
        return Problem(
            id=f"req-{uuid.uuid4().hex[:12]}",
            source=req.code,
            mode=req.mode,
            edition=req.edition,
            tests=req.tests,
            family=None,
            client_diagnostics=tuple(client_diags) if client_diags else None,
        )

    def _answer(self, req: FixRequest, problem: Problem, record: ProblemRecord) -> dict[str, Any]:
        with self.db.session() as s:
            row = EpisodeRepository(s).save(
                record, origin="client", problem_ref=problem.id, mode=req.mode, edition=req.edition
            )
            episode_id = row.id
        return fix_response(record, episode_id).model_dump()

    def check(self, req: CheckRequest) -> dict[str, Any]:
        result = self.sandbox.check(req.code, mode=req.mode, edition=req.edition)
        return {
            "ok": result.ok,
            "verdict": str(result.verdict),
            "error_codes": error_codes(result.diagnostics),
            "diagnostics": [d.to_dict() for d in result.diagnostics],
            "message": result.message or None,
            "duration_s": round(result.duration_s, 4),
        }


def fix_response(record: ProblemRecord, episode_id: int | None = None) -> FixResponse:
    """The one answer to a fix, for ``POST /v1/fix`` and ``dreamfix fix --json``: the record's own route
    (``ProblemRecord.route_task``/``route_version``, also what SQL stores) and its attempts."""
    from agent.loop import unified_diff
    from service.api.enums import FinalStatus
    from service.api.schemas import FixResponse, RouteOut

    return FixResponse(
        fixed=record.fixed,
        verified=record.verified,
        code=record.final_code,
        diff=unified_diff(record.source, record.final_code),
        error_codes=list(record.error_codes),
        attempts=[attempt_out(a) for a in record.attempts],
        route=RouteOut(task=record.route_task, version=record.route_version),
        episode_id=episode_id,
        status=FinalStatus(record.final_status),
        wall_seconds=round(record.wall_seconds, 3),
        steps_to_green=record.steps_to_green,
        remaining_error_codes=record.attempts[-1].error_codes_after
        if record.attempts
        else record.error_codes,
    )


def attempt_out(a: AttemptRecord) -> AttemptOut:
    """One attempt as the API answers it (``FixResponse.attempts``)."""
    from service.api.enums import AttemptVerdict
    from service.api.schemas import AttemptOut, RouteOut

    return AttemptOut(
        attempt=a.attempt,
        strategy=a.strategy,
        verdict=AttemptVerdict(a.verdict),
        fixed=a.fixed,
        error_codes=a.error_codes_after,
        route=RouteOut(task=a.route_task, version=a.route_version),
        note=a.note,
        seconds=round(a.generate_seconds + a.check_seconds, 3),
    )
