"""The coefficient bank: every task's Share coefficients, stacked per layer, behind one swappable reference.

Routed layers never read the bank directly. A caller pins ``bank.snapshot()`` for a whole generate/forward
(``learner.routing.routed``), and a change (``set_task``, ``remove_task``, ``replace_bases``) builds a brand
new snapshot and then replaces one reference. A forward therefore sees the old coefficients or the new ones
in every layer, never a mix, without any lock on the hot path.

The bases live in the snapshot too, not in the layers: Phase 3 changes the bases *and* every task's
coefficients at once, and that must be just as atomic as a single task's swap.

The seam with the rest of the daemon is task keys: the service says which version of each task it wants
served (``reconcile``, one swap for the whole change), the router and the agent name a row by
``(task, version)``, and the snapshot maps those keys to its rows (``rows_for``). Rows never leave learner.

Task indices are stable: a task keeps its slot until removed, and a freed slot is reused by the next new
task. Each stacked tensor has one extra, all-zero slot at the end, which row index −1 selects (torch
negative indexing) — base rows get an exact zero delta with no branch.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import Tensor

from learner.routing import TaskKey
from learner.share.math import LayerBasis, TaskCoefficients

BASE = -1  # row index of the base model (no delta)


@dataclass(frozen=True)
class LayerState:
    """Everything one routed layer reads in one forward: its basis and all tasks' stacked coefficients."""

    basis: LayerBasis
    eb: Tensor  # (slots + 1, kβ, p); last slot zero
    ea: Tensor  # (slots + 1, kα, p); last slot zero


@dataclass(frozen=True)
class BankSnapshot:
    """An immutable view of the bank: never mutated after construction, safe to share across threads."""

    layers: Mapping[str, LayerState]
    task_index: Mapping[str, int]
    versions: Mapping[str, int]
    basis_id: str
    generation: int = 0
    p: int = 0

    def layer(self, key: str) -> LayerState:
        try:
            return self.layers[key]
        except KeyError:
            raise KeyError(
                f"the pinned Share snapshot has no layer {key!r}: was it built for this model?"
            ) from None

    def index(self, task: str | None) -> int:
        """Row index for ``task`` in this snapshot; None → base (−1)."""
        if task is None:
            return BASE
        try:
            return self.task_index[task]
        except KeyError:
            raise KeyError(f"unknown Share task {task!r}; known: {sorted(self.task_index)}") from None

    def rows_for(self, keys: Sequence[TaskKey | None]) -> list[int]:
        """The bank row of each routed key: None → base (−1); ``(task, version)`` → the task's row, which
        must serve exactly that version in this snapshot (a route read from another snapshot is refused)."""
        out = []
        for key in keys:
            if key is None:
                out.append(BASE)
                continue
            task, version = key
            served = self.versions.get(task)
            if served != version:
                have = f"serves v{served}" if served is not None else "does not serve it"
                raise ValueError(f"Share task {task!r} v{version} is not in this snapshot (it {have})")
            out.append(self.task_index[task])
        return out

    def rows(self, tasks: Sequence[str | None], device: torch.device | str | None = None) -> Tensor:
        """The ``row_tasks`` tensor for a batch whose row i belongs to ``tasks[i]`` (None = base)."""
        if device is None:
            first = next(iter(self.layers.values()), None)
            device = first.eb.device if first is not None else "cpu"
        return torch.tensor([self.index(t) for t in tasks], dtype=torch.long, device=device)


def basis_fingerprint(bases: Mapping[str, LayerBasis]) -> str:
    """A short content hash of a basis set (float32 values, shapes, scalings, layer names): task versions
    carry it so they can never be loaded against a different basis."""
    digest = hashlib.sha256()
    for key in sorted(bases):
        basis = bases[key]
        digest.update(
            json.dumps([key, list(basis.beta.shape), list(basis.alpha.shape), basis.scaling]).encode()
        )
        for tensor in (basis.beta, basis.alpha):
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Version:
    """One entry of :meth:`ShareBank.reconcile`'s desired state: the version number, and how to read its
    coefficients (called only when the bank does not serve that version already)."""

    version: int
    load: Callable[[], Mapping[str, TaskCoefficients]]


@dataclass
class _Task:
    slot: int
    version: int
    coeffs: dict[str, TaskCoefficients]  # float32 CPU masters


@dataclass
class _State:
    bases: dict[str, LayerBasis]  # float32 CPU masters
    basis_id: str
    tasks: dict[str, _Task] = field(default_factory=dict)


class ShareBank:
    """Task name ↔ slot, per-task versions, float32 masters, and the current device snapshot.

    The masters stay float32 on the CPU so exports and artifacts are exact even when the model (and hence the
    snapshot) runs in bf16 on a GPU. Every mutation holds a lock while building the next snapshot; readers
    only read one attribute.
    """

    def __init__(
        self,
        bases: Mapping[str, LayerBasis],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        base_model_id: str | None = None,
    ) -> None:
        if not bases:
            raise ValueError("a Share bank needs at least one layer basis")
        self.device = torch.device(device)
        self.dtype = dtype
        self.base_model_id = base_model_id
        self._lock = threading.Lock()
        self._generation = 0
        self._state = _State(bases=_master_bases(bases), basis_id=basis_fingerprint(bases))
        self._snapshot = self._build(self._state)

    # ----------------------------------------------------------------- reading
    def snapshot(self) -> BankSnapshot:
        """The current immutable snapshot; pin it for the whole forward/generate call."""
        return self._snapshot

    @property
    def basis_id(self) -> str:
        return self._state.basis_id

    @property
    def bases(self) -> dict[str, LayerBasis]:
        """float32 CPU copies of the current bases, keyed by layer name."""
        return dict(self._state.bases)

    @property
    def layer_names(self) -> list[str]:
        return sorted(self._state.bases)

    def tasks(self) -> dict[str, int]:
        """{task: version} of the installed tasks."""
        return {name: task.version for name, task in self._state.tasks.items()}

    def index(self, task: str) -> int:
        return self._snapshot.index(task)

    def version(self, task: str) -> int:
        try:
            return self._state.tasks[task].version
        except KeyError:
            raise KeyError(f"unknown Share task {task!r}") from None

    def coefficients(self, task: str) -> dict[str, TaskCoefficients]:
        """float32 CPU coefficients of ``task`` (as installed, not padded)."""
        try:
            return dict(self._state.tasks[task].coeffs)
        except KeyError:
            raise KeyError(f"unknown Share task {task!r}") from None

    # ----------------------------------------------------------------- writing
    def set_task(
        self, task: str, coeffs_by_layer: Mapping[str, TaskCoefficients], version: int
    ) -> BankSnapshot:
        """Install or replace ``task``'s coefficients atomically; returns the new snapshot."""
        _check_key(task, version)
        with self._lock:
            state = self._state
            coeffs = _validated(state.bases, coeffs_by_layer, task)
            tasks = dict(state.tasks)
            slot = tasks[task].slot if task in tasks else _free_slot(tasks)
            tasks[task] = _Task(slot=slot, version=version, coeffs=coeffs)
            return self._commit(_State(bases=state.bases, basis_id=state.basis_id, tasks=tasks), touched=task)

    def remove_task(self, task: str) -> BankSnapshot:
        """Drop ``task``; its rows fall back to the base model from the next snapshot on."""
        with self._lock:
            state = self._state
            if task not in state.tasks:
                raise KeyError(f"unknown Share task {task!r}")
            tasks = {name: t for name, t in state.tasks.items() if name != task}
            return self._commit(_State(bases=state.bases, basis_id=state.basis_id, tasks=tasks), touched=task)

    def reconcile(
        self, desired: Mapping[str, Version], bases: Mapping[str, LayerBasis] | None = None
    ) -> BankSnapshot:
        """Serve exactly ``desired`` (task → version), in one swap: tasks not named are dropped, a task whose
        version differs is loaded, the others are untouched. Nothing differs: the current snapshot, no new
        one (idempotent). ``bases`` with another fingerprint than the bank's (a Phase 3 merge was promoted)
        reloads every desired task in them; None or the same bases: the current ones."""
        for task, wanted in desired.items():
            _check_key(task, wanted.version)
        if bases is not None and basis_fingerprint(bases) != self.basis_id:
            loaded = {task: wanted.load() for task, wanted in desired.items()}
            return self.replace_bases(bases, loaded, {task: v.version for task, v in desired.items()})
        with self._lock:
            state = self._state
            changed = [
                t for t, v in desired.items() if t not in state.tasks or state.tasks[t].version != v.version
            ]
            dropped = [t for t in state.tasks if t not in desired]
            if not changed and not dropped:
                return self._snapshot
            tasks = {name: t for name, t in state.tasks.items() if name in desired}
            for name in changed:
                coeffs = _validated(state.bases, desired[name].load(), name)
                slot = tasks[name].slot if name in tasks else _free_slot(tasks)
                tasks[name] = _Task(slot=slot, version=desired[name].version, coeffs=coeffs)
            touched = [*changed, *dropped]
            return self._commit(
                _State(bases=state.bases, basis_id=state.basis_id, tasks=tasks),
                touched=touched[0] if len(touched) == 1 else None,
            )

    def replace_bases(
        self,
        bases: Mapping[str, LayerBasis],
        coeffs_by_task: Mapping[str, Mapping[str, TaskCoefficients]],
        versions: Mapping[str, int],
    ) -> BankSnapshot:
        """Install new bases and every task's coefficients in them in one swap (Phase 3). Tasks keep their
        slots; tasks not listed are dropped; new ones get free slots."""
        if set(coeffs_by_task) != set(versions):
            raise ValueError("coeffs_by_task and versions must name the same tasks")
        with self._lock:
            old = self._state
            if set(bases) != set(old.bases):
                raise ValueError(
                    f"new bases cover layers {sorted(bases)}, the bank serves {sorted(old.bases)}"
                )
            for key, basis in bases.items():
                ref = old.bases[key]
                if (basis.out_features, basis.in_features) != (ref.out_features, ref.in_features):
                    raise ValueError(f"layer {key}: new basis shape does not match the model layer")
            masters = _master_bases(bases)
            tasks: dict[str, _Task] = {}
            for name in coeffs_by_task:  # keep existing slots first so they stay stable
                if name in old.tasks:
                    tasks[name] = _Task(old.tasks[name].slot, versions[name], {})
            for name in coeffs_by_task:
                if name not in tasks:
                    tasks[name] = _Task(_free_slot(tasks), versions[name], {})
            for name, coeffs in coeffs_by_task.items():
                tasks[name].coeffs = _validated(masters, coeffs, name)
            return self._commit(_State(bases=masters, basis_id=basis_fingerprint(masters), tasks=tasks))

    # ----------------------------------------------------------------- internals
    def _commit(self, state: _State, touched: str | None = None) -> BankSnapshot:
        snapshot = self._patch(state, touched) if touched is not None else None
        if snapshot is None:
            snapshot = self._build(state)
        self._state = state
        self._snapshot = snapshot  # the one reference readers see: replaced last
        return snapshot

    def _patch(self, state: _State, touched: str) -> BankSnapshot | None:
        """The next snapshot when one task changed: copy each layer's small stack and rewrite one slot —
        O(layers), so a swap stays fast with many tasks. None when the stacks must grow (new slot, wider p)."""
        old = self._snapshot
        task = state.tasks.get(touched)
        slot = task.slot if task is not None else old.task_index[touched]
        some_layer = next(iter(old.layers.values()))
        if slot >= some_layer.eb.shape[0] - 1 or (task is not None and _task_p(task) > old.p):
            return None
        layers: dict[str, LayerState] = {}
        for key, layer in old.layers.items():
            eb, ea = layer.eb.clone(), layer.ea.clone()
            eb[slot].zero_()
            ea[slot].zero_()
            if task is not None:
                c = task.coeffs[key]
                eb[slot, :, : c.p] = c.eb.to(self.device, self.dtype)
                ea[slot, :, : c.p] = c.ea.to(self.device, self.dtype)
            layers[key] = LayerState(basis=layer.basis, eb=eb, ea=ea)
        return self._snapshot_of(state, layers, old.p)

    def _build(self, state: _State) -> BankSnapshot:
        slots = 1 + max((t.slot for t in state.tasks.values()), default=-1)
        p = max((_task_p(t) for t in state.tasks.values()), default=1)
        by_slot = {t.slot: t for t in state.tasks.values()}
        layers: dict[str, LayerState] = {}
        for key, basis in state.bases.items():
            # One stack per layer; free slots and the final base slot are zero, narrower tasks zero-padded.
            eb = torch.stack([_padded(by_slot, i, key, "eb", basis.k_beta, p) for i in range(slots + 1)])
            ea = torch.stack([_padded(by_slot, i, key, "ea", basis.k_alpha, p) for i in range(slots + 1)])
            layers[key] = LayerState(
                basis=basis.to(self.device, self.dtype),
                eb=eb.to(self.device, self.dtype),
                ea=ea.to(self.device, self.dtype),
            )
        return self._snapshot_of(state, layers, p)

    def _snapshot_of(self, state: _State, layers: dict[str, LayerState], p: int) -> BankSnapshot:
        self._generation += 1
        return BankSnapshot(
            layers=MappingProxyType(layers),
            task_index=MappingProxyType({name: t.slot for name, t in state.tasks.items()}),
            versions=MappingProxyType({name: t.version for name, t in state.tasks.items()}),
            basis_id=state.basis_id,
            generation=self._generation,
            p=p,
        )


def _check_key(task: str, version: int) -> None:
    if not task or not isinstance(task, str):
        raise ValueError("task name must be a non-empty string")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ValueError(f"task {task!r}: version must be a non-negative int, got {version!r}")


def _master_bases(bases: Mapping[str, LayerBasis]) -> dict[str, LayerBasis]:
    return {key: b.to("cpu", torch.float32) for key, b in bases.items()}


def _task_p(task: _Task) -> int:
    return next(iter(task.coeffs.values())).p


def _padded(by_slot: Mapping[int, _Task], slot: int, key: str, side: str, k: int, p: int) -> Tensor:
    task = by_slot.get(slot)
    if task is None:
        return torch.zeros(k, p)
    value: Tensor = getattr(task.coeffs[key], side)
    return value if value.shape[1] == p else torch.nn.functional.pad(value, (0, p - value.shape[1]))


def _free_slot(tasks: Mapping[str, _Task]) -> int:
    used = {t.slot for t in tasks.values()}
    slot = 0
    while slot in used:
        slot += 1
    return slot


def _validated(
    bases: Mapping[str, LayerBasis], coeffs_by_layer: Mapping[str, TaskCoefficients], task: str
) -> dict[str, TaskCoefficients]:
    """Coefficients for exactly the bank's layers, with matching k, finite, copied to float32 CPU."""
    missing = set(bases) - set(coeffs_by_layer)
    extra = set(coeffs_by_layer) - set(bases)
    if missing or extra:
        raise ValueError(
            f"task {task!r}: coefficients must cover exactly the bank's layers "
            f"(missing {sorted(missing)[:3]}, unknown {sorted(extra)[:3]})"
        )
    out: dict[str, TaskCoefficients] = {}
    ps = set()
    for key, basis in bases.items():
        c = coeffs_by_layer[key]
        if c.eb.shape[0] != basis.k_beta or c.ea.shape[0] != basis.k_alpha:
            raise ValueError(
                f"task {task!r}, layer {key}: coefficients have k = ({c.eb.shape[0]}, {c.ea.shape[0]}), "
                f"the basis has ({basis.k_beta}, {basis.k_alpha}); Phase-2 results with φ directions must "
                "be merged (Phase 3) before they can be served"
            )
        if not (torch.isfinite(c.eb).all() and torch.isfinite(c.ea).all()):
            raise ValueError(f"task {task!r}, layer {key}: coefficients contain NaN or inf")
        ps.add(c.p)
        out[key] = TaskCoefficients(
            c.eb.detach().to("cpu", torch.float32).clone(), c.ea.detach().to("cpu", torch.float32).clone()
        )
    if len(ps) != 1:
        raise ValueError(f"task {task!r}: every layer must use the same pseudo-rank p, got {sorted(ps)}")
    return out
