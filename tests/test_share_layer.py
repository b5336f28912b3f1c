"""The routed ShareLinear and the coefficient bank on the tiny Qwen2: base equivalence, per-row routing,
mixed batches, atomic hot-swap."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from learner import routing
from learner.share.bank import ShareBank
from learner.share.layer import ShareLinear, attach_share, detach_share
from learner.share.math import LayerBasis, TaskCoefficients
from learner.share.phases import phase1
from tests.helpers import random_seed

pytestmark = pytest.mark.usefixtures("one_thread")


def attached(
    model: torch.nn.Module, tasks: int = 3
) -> tuple[ShareBank, dict[str, dict[str, TaskCoefficients]]]:
    seeds = [random_seed(model, f"t{i}", seed=i) for i in range(tasks)]
    result = phase1(seeds, threshold=1.0)
    bank = attach_share(model, result.bases)
    for i, seed in enumerate(seeds):
        bank.set_task(seed.name, result.coefficients[seed.name], version=i + 1)
    return bank, result.coefficients


def tokens(model: torch.nn.Module, batch: int, length: int = 10, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, length), generator=g)


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def test_without_a_route_the_attached_model_is_the_base_model(fresh_tiny_model) -> None:
    model, _ = fresh_tiny_model
    ids = tokens(model, 2)
    before = logits(model, ids)
    attached(model)
    assert isinstance(model.model.layers[0].self_attn.q_proj, ShareLinear)
    assert torch.equal(logits(model, ids), before)
    assert detach_share(model) == 4
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert torch.equal(logits(model, ids), before)


def test_routed_rows_get_their_task_and_base_rows_stay_exact(fresh_tiny_model) -> None:
    model, _ = fresh_tiny_model
    ids = tokens(model, 1).repeat(3, 1)
    base = logits(model, ids)
    bank, _ = attached(model)
    snap = bank.snapshot()
    with routing.routed(snap.rows(["t0", None, "t1"]), snap):
        out = logits(model, ids)
    assert torch.equal(out[1], base[1])
    assert not torch.allclose(out[0], base[0], atol=1e-3)
    assert not torch.allclose(out[0], out[2], atol=1e-3)


def test_mixed_task_batch_equals_each_row_alone(fresh_tiny_model) -> None:
    model, _ = fresh_tiny_model
    bank, _ = attached(model, tasks=3)
    ids = tokens(model, 5, seed=3)
    routes = ["t2", None, "t0", "t1", "t2"]
    snap = bank.snapshot()
    with routing.routed(snap.rows(routes), snap):
        mixed = logits(model, ids)
    for i, task in enumerate(routes):
        with routing.routed(snap.rows([task]), snap):
            alone = logits(model, ids[i : i + 1])
        assert torch.allclose(mixed[i], alone[0], atol=1e-5, rtol=1e-5), task


def test_removed_task_falls_back_to_base_and_slots_stay_stable(fresh_tiny_model) -> None:
    model, _ = fresh_tiny_model
    bank, coeffs = attached(model, tasks=3)
    ids = tokens(model, 1)
    old = bank.snapshot()
    index_t2 = bank.index("t2")
    with routing.routed(old.rows(["t2"]), old):
        t2_before = logits(model, ids)
    bank.remove_task("t1")
    assert bank.index("t2") == index_t2
    with pytest.raises(KeyError, match="unknown Share task"):
        bank.snapshot().rows(["t1"])
    bank.set_task("t1b", coeffs["t1"], version=1)
    assert bank.index("t1b") == old.index("t1")  # the freed slot is reused
    new = bank.snapshot()
    with routing.routed(new.rows(["t2"]), new):
        assert torch.equal(logits(model, ids), t2_before)
    with routing.routed(old.rows(["t2"]), old):  # an old pinned snapshot is unaffected by later swaps
        assert torch.equal(logits(model, ids), t2_before)
    assert old.versions == {"t0": 1, "t1": 2, "t2": 3}


def test_bank_rejects_bad_coefficients(fresh_tiny_model) -> None:
    model, _ = fresh_tiny_model
    bank, coeffs = attached(model, tasks=2)
    layer = next(iter(coeffs["t0"]))
    with pytest.raises(ValueError, match="exactly the bank's layers"):
        bank.set_task("x", {layer: coeffs["t0"][layer]}, version=1)
    wrong_k = {k: TaskCoefficients(c.eb[:-1], c.ea) for k, c in coeffs["t0"].items()}
    with pytest.raises(ValueError, match="merged"):
        bank.set_task("x", wrong_k, version=1)
    nan = {k: TaskCoefficients(c.eb * float("nan"), c.ea) for k, c in coeffs["t0"].items()}
    with pytest.raises(ValueError, match="NaN"):
        bank.set_task("x", nan, version=1)
    with pytest.raises(ValueError, match="version"):
        bank.set_task("x", coeffs["t0"], version=-1)
    assert set(bank.tasks()) == {"t0", "t1"}


def test_attach_refuses_wrong_shapes_and_double_attach(fresh_tiny_model) -> None:
    model, _ = fresh_tiny_model
    bank, _ = attached(model, tasks=1)
    with pytest.raises(ValueError, match="already carries"):
        attach_share(model, bank.bases)
    detach_share(model)
    key = "model.layers.0.self_attn.v_proj"
    wrong = {key: LayerBasis(torch.eye(64)[:, :2], torch.eye(64)[:, :2], 1.0)}  # v_proj has 32 outputs
    with pytest.raises(ValueError, match="differs from the basis"):
        attach_share(model, wrong)


def test_a_forward_concurrent_with_swaps_sees_one_version_in_all_layers(fresh_tiny_model) -> None:
    model, _ = fresh_tiny_model
    bank, coeffs = attached(model, tasks=2)
    ids = tokens(model, 1)
    v1 = coeffs["t0"]
    v2 = coeffs["t1"]
    expected = []
    for version in (v1, v2):
        bank.set_task("hot", version, version=len(expected) + 1)
        snap = bank.snapshot()
        with routing.routed(snap.rows(["hot"]), snap):
            expected.append(logits(model, ids))
    assert not torch.allclose(expected[0], expected[1], atol=1e-3)

    stop = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        while not stop.is_set():
            bank.set_task("hot", v1 if swaps % 2 else v2, version=swaps + 3)
            swaps += 1

    thread = threading.Thread(target=swapper)
    thread.start()
    seen = {0: 0, 1: 0}
    # Which version a snapshot catches depends on thread scheduling (on a loaded 2-core CI runner the
    # swapper can go unscheduled for a long stretch), so forward until both versions have been seen a
    # few times, within a deadline, rather than for a fixed count.
    deadline = time.monotonic() + 60
    forwards = 0
    try:
        while forwards < 40 or min(seen.values()) < 3:
            if time.monotonic() > deadline:
                break
            forwards += 1
            snap = bank.snapshot()
            with routing.routed(snap.rows(["hot"]), snap):
                out = logits(model, ids)
            matches = [i for i, ref in enumerate(expected) if torch.equal(out, ref)]
            assert len(matches) == 1, "a forward mixed two versions across layers"
            seen[matches[0]] += 1
    finally:
        stop.set()
        thread.join()
    assert swaps > 10
    assert seen[0] > 0 and seen[1] > 0


def test_incremental_swaps_build_the_same_stacks_as_a_full_rebuild(fresh_tiny_model) -> None:
    model, _ = fresh_tiny_model
    bank, coeffs = attached(model, tasks=3)
    narrow = {k: TaskCoefficients(c.eb[:, :2], c.ea[:, :2]) for k, c in coeffs["t0"].items()}
    bank.remove_task("t1")  # patched: slot 1 zeroed
    bank.set_task("t0", coeffs["t2"], version=5)  # patched in place of slot 0
    bank.set_task("narrow", narrow, version=1)  # reuses slot 1, zero-padded from p=2 to p=4
    patched = bank.snapshot()
    assert patched.index("narrow") == 1
    everything = {name: bank.coefficients(name) for name in bank.tasks()}
    rebuilt = bank.replace_bases(bank.bases, everything, bank.tasks())
    assert dict(rebuilt.task_index) == dict(patched.task_index)
    for key, layer in patched.layers.items():
        assert torch.equal(layer.eb, rebuilt.layers[key].eb)
        assert torch.equal(layer.ea, rebuilt.layers[key].ea)
