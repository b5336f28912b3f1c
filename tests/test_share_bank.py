"""The Share bank's task-key seam: ``reconcile`` to a desired task → version mapping (add, replace, remove,
idempotent, one swap, new bases) and ``rows_for``, which maps (task, version) keys to rows inside learner."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import pytest
import torch

from learner.share.bank import BASE, ShareBank, Version
from learner.share.math import TaskCoefficients
from learner.share.phases import phase1
from tests.helpers import random_seed

Coeffs = dict[str, TaskCoefficients]


@pytest.fixture
def trained(tiny_model) -> tuple[ShareBank, dict[str, Coeffs]]:
    """An empty bank over the Phase 1 bases of four random tasks, and those tasks' coefficients."""
    model, _ = tiny_model
    result = phase1([random_seed(model, f"t{i}", seed=i) for i in range(4)], threshold=1.0)
    return ShareBank(result.bases), result.coefficients


class Loads:
    """Desired versions whose loaders count how often the bank reads each one."""

    def __init__(self, coeffs: Mapping[str, Coeffs]) -> None:
        self.coeffs = coeffs
        self.calls: list[str] = []

    def version(self, source: str, number: int) -> Version:
        def load() -> Coeffs:
            self.calls.append(f"{source}@v{number}")
            return self.coeffs[source]

        return Version(number, load)


def served(bank: ShareBank, task: str) -> Coeffs:
    return bank.coefficients(task)


def same(a: Coeffs, b: Coeffs) -> bool:
    return all(torch.equal(a[k].eb, b[k].eb) and torch.equal(a[k].ea, b[k].ea) for k in b)


def test_reconcile_adds_replaces_and_removes_in_one_swap(trained) -> None:
    bank, coeffs = trained
    loads = Loads(coeffs)
    first = bank.reconcile({"a": loads.version("t0", 1), "b": loads.version("t1", 1)})
    assert dict(first.versions) == {"a": 1, "b": 1} and bank.snapshot() is first
    assert same(served(bank, "a"), coeffs["t0"]) and same(served(bank, "b"), coeffs["t1"])
    assert sorted(loads.calls) == ["t0@v1", "t1@v1"]

    loads.calls.clear()
    generation = first.generation
    second = bank.reconcile({"a": loads.version("t2", 2), "c": loads.version("t3", 1)})
    assert dict(second.versions) == {"a": 2, "c": 1}  # a replaced, b removed, c added
    assert second.generation == generation + 1, "the whole change is one new snapshot"
    assert sorted(loads.calls) == ["t2@v2", "t3@v1"]
    assert same(served(bank, "a"), coeffs["t2"]) and same(served(bank, "c"), coeffs["t3"])
    assert second.index("a") == first.index("a")  # a replaced task keeps its row
    assert second.index("c") == first.index("b")  # the freed row is reused
    assert dict(first.versions) == {"a": 1, "b": 1}  # a pinned snapshot does not change

    assert dict(bank.reconcile({}).versions) == {}
    assert bank.tasks() == {}


def test_reconcile_is_idempotent_and_reads_only_what_changed(trained) -> None:
    bank, coeffs = trained
    loads = Loads(coeffs)
    desired = {"a": loads.version("t0", 1), "b": loads.version("t1", 3)}
    snapshot = bank.reconcile(desired)
    loads.calls.clear()
    assert bank.reconcile(desired) is snapshot  # nothing differs: no load, no new snapshot
    assert bank.reconcile(dict(desired)) is snapshot
    assert loads.calls == []
    changed = bank.reconcile({**desired, "b": loads.version("t2", 4)})
    assert loads.calls == ["t2@v4"], "the unchanged task is not read again"
    assert changed is not snapshot and dict(changed.versions) == {"a": 1, "b": 4}


def test_reconcile_to_new_bases_reloads_every_task_in_them(tiny_model, trained) -> None:
    bank, coeffs = trained
    model, _ = tiny_model
    bank.reconcile({"a": Version(1, lambda: coeffs["t0"]), "b": Version(1, lambda: coeffs["t1"])})
    other = phase1([random_seed(model, f"u{i}", seed=10 + i) for i in range(2)], threshold=1.0)
    same_bases = bank.reconcile({"a": Version(1, lambda: coeffs["t0"])}, bank.bases)
    assert same_bases.basis_id == bank.basis_id and dict(same_bases.versions) == {"a": 1}
    moved = bank.reconcile(
        {
            "a": Version(2, lambda: other.coefficients["u0"]),
            "z": Version(1, lambda: other.coefficients["u1"]),
        },
        other.bases,
    )
    assert moved.basis_id == ShareBank(other.bases).basis_id != same_bases.basis_id
    assert dict(moved.versions) == {"a": 2, "z": 1}
    assert same(served(bank, "z"), other.coefficients["u1"])


def test_reconcile_refuses_bad_entries_and_keeps_serving_the_old_state(trained) -> None:
    bank, coeffs = trained
    before = bank.reconcile({"a": Version(1, lambda: coeffs["t0"])})
    layer = next(iter(coeffs["t1"]))
    with pytest.raises(ValueError, match="exactly the bank's layers"):
        bank.reconcile({"a": Version(2, lambda: {layer: coeffs["t1"][layer]})})
    with pytest.raises(ValueError, match="version must be a non-negative int"):
        bank.reconcile({"a": Version(-1, lambda: coeffs["t1"])})
    with pytest.raises(ValueError, match="non-empty string"):
        bank.reconcile({"": Version(1, lambda: coeffs["t1"])})
    assert bank.snapshot() is before


def test_rows_for_maps_task_keys_to_rows_of_exactly_that_version(trained) -> None:
    bank, coeffs = trained
    snap = bank.reconcile({"a": Version(1, lambda: coeffs["t0"]), "b": Version(2, lambda: coeffs["t1"])})
    assert snap.rows_for([("b", 2), None, ("a", 1)]) == [snap.index("b"), BASE, snap.index("a")]
    assert snap.rows_for([]) == []
    with pytest.raises(ValueError, match=r"'a' v2 is not in this snapshot \(it serves v1\)"):
        snap.rows_for([("a", 2)])
    with pytest.raises(ValueError, match=r"'zz' v1 is not in this snapshot \(it does not serve it\)"):
        snap.rows_for([("zz", 1)])
    newer = bank.reconcile({"a": Version(5, lambda: coeffs["t2"])})
    assert newer.rows_for([("a", 5)]) == [newer.index("a")]
    assert snap.rows_for([("a", 1)]) == [snap.index("a")]  # a route read from the old pinned snapshot


def test_reconcile_is_atomic_for_concurrent_readers(trained) -> None:
    """Every task moves to the next version in one reconcile: a reader never sees two versions at once."""
    bank, coeffs = trained
    tasks = ["a", "b", "c"]
    bank.reconcile({t: Version(0, lambda t=t: coeffs["t0"]) for t in tasks})
    stop = threading.Event()
    torn: list[set[int]] = []

    def reader() -> None:
        while not stop.is_set():
            versions = set(bank.snapshot().versions.values())
            if len(versions) != 1:
                torn.append(versions)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for version in range(1, 60):
        source = coeffs[f"t{version % 4}"]
        bank.reconcile({t: Version(version, lambda source=source: source) for t in tasks})
    stop.set()
    for t in threads:
        t.join()
    assert not torn
    assert set(bank.tasks().values()) == {59}
